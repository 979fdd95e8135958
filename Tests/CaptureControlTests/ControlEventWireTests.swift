import CaptureControl
import CaptureCore
import CaptureUplink
import Foundation
import XCTest

/// The control protocol's bytes, written out by hand (docs/control-protocol.md §4, §5 and §7):
/// every event's `data` and the typed results, each encoded and compared with its literal,
/// and the literal decoded and compared with the value. A field renamed, left out, added, made
/// `null` where it was absent (or the reverse), or an enum's wire name changed fails here,
/// not in an SDK in the field.
final class ControlEventWireTests: XCTestCase {
    /// 2026-11-22T07:50:15.661Z.
    private static let at: Int64 = 1_795_333_815_661_841_100
    private static let envelopeTail = #""timestamp":"2026-11-22T07:50:15.661Z","timestampUnixNs":1795333815661841100,"type":"event"}"#

    private var pinned: Set<ControlEventName> = []

    /// The event encodes to exactly `expected` (the JSON after the prefix), and reads back as itself.
    private func assertWire(_ event: ControlEvent, _ expected: String, file: StaticString = #filePath, line: UInt = #line) throws {
        pinned.insert(event.name)
        XCTAssertEqual(String(decoding: event.encodedLine(), as: UTF8.self), "videodb_recorder|" + expected + "\n",
                       file: file, line: line)
        let message = try JSONCoding.decoder.decode(JSONValue.self, from: Data(expected.utf8))
        XCTAssertEqual(try ControlEvent(message: message), event, "as ControlClient reads it", file: file, line: line)
        XCTAssertEqual(try JSONCoding.decoder.decode(ControlEvent.self, from: Data(expected.utf8)), event, file: file, line: line)
    }

    private func event(_ payload: ControlEvent.Payload, session: String? = "cap-example-1", channel: String? = nil) -> ControlEvent {
        ControlEvent(payload, sessionId: session, channel: channel, timestampUnixNs: Self.at)
    }

    private static let spool = "/tmp/state/capture-agent/spool/cap-example-1"

    private static let videoStats = ChannelStatsSnapshot(
        channel: "display:1", type: .video, captured: 158, repeated: 52, leftOut: 0, dropped: 0, encoded: 210,
        silenceFilledMs: 0, overlapDroppedMs: 0, discontinuities: 0, chunks: 7, bytes: 2_821_504, largestChunkBytes: 612_000,
        paused: nil, offlineFrames: 0, layoutChanges: 0, capturedSamples: nil, silenceFilledSamples: nil,
        repeatedSamples: nil, lostSamples: nil)
    private static let videoStatsJSON = #"{"bytes":2821504,"captured":158,"channel":"display:1","chunks":7,"discontinuities":0,"dropped":0,"encoded":210,"largestChunkBytes":612000,"layoutChanges":0,"leftOut":0,"offlineFrames":0,"overlapDroppedMs":0,"repeated":52,"silenceFilledMs":0,"type":"video"}"#

    func testSessionEvents() throws {
        let started = StartRecordingResult(
            sessionId: "cap-example-1", state: .active,
            channels: [.init(channelId: "display:1", type: .video, name: "Display 1 (screen 1920x1080+0+0)", isPrimary: true),
                       .init(channelId: "mic:default", type: .audio, name: "Default microphone (rig-mic)", isPrimary: false)],
            outputDirectory: Self.spool, startedAt: "2026-11-22T07:50:15.661Z")
        try assertWire(event(.recordingStarted(started)),
                       #"{"data":{"channels":[{"channel_id":"display:1","is_primary":true,"name":"Display 1 (screen 1920x1080+0+0)","type":"video"},{"channel_id":"mic:default","is_primary":false,"name":"Default microphone (rig-mic)","type":"audio"}],"outputDirectory":"/tmp/state/capture-agent/spool/cap-example-1","sessionId":"cap-example-1","startedAt":"2026-11-22T07:50:15.661Z","state":"active"},"event":"recording-started","sessionId":"cap-example-1","#
                       + Self.envelopeTail)

        try assertWire(event(.recordingPaused(.init(tracks: [.mic], atNs: 2_943_911_983, pausedTracks: [.mic]))),
                       #"{"data":{"atNs":2943911983,"pausedTracks":["mic"],"tracks":["mic"]},"event":"recording-paused","sessionId":"cap-example-1","#
                       + Self.envelopeTail)
        try assertWire(event(.recordingResumed(.init(tracks: [.mic, .systemAudio], atNs: 4_945_440_435, pausedTracks: [.screen]))),
                       #"{"data":{"atNs":4945440435,"pausedTracks":["screen"],"tracks":["mic","system_audio"]},"event":"recording-resumed","sessionId":"cap-example-1","#
                       + Self.envelopeTail)

        let summary = RecordingSummary(sessionId: "cap-example-1", outputDirectory: Self.spool, durationNs: 7_044_612_586,
                                       channels: [Self.videoStats], error: nil, errorCode: nil)
        try assertWire(event(.recordingStopped(.init(summary: summary))),
                       #"{"data":{"summary":{"channels":["# + Self.videoStatsJSON
                       + #"],"durationNs":7044612586,"outputDirectory":"/tmp/state/capture-agent/spool/cap-example-1","sessionId":"cap-example-1"}},"event":"recording-stopped","sessionId":"cap-example-1","#
                       + Self.envelopeTail)

        try assertWire(event(.recordingComplete(.spool(chunks: 14, bytes: 2_980_364, outputDirectory: Self.spool))),
                       #"{"data":{"bytes":2980364,"chunks":14,"deliveredTo":"spool","outputDirectory":"/tmp/state/capture-agent/spool/cap-example-1"},"event":"recording-complete","sessionId":"cap-example-1","#
                       + Self.envelopeTail)
        try assertWire(event(.recordingComplete(.endpoint(chunks: 14, bytes: 2_980_364, endpoint: "ws://127.0.0.1:8470/capture/uplink"))),
                       #"{"data":{"bytes":2980364,"chunks":14,"deliveredTo":"endpoint","endpoint":"ws://127.0.0.1:8470/capture/uplink"},"event":"recording-complete","sessionId":"cap-example-1","#
                       + Self.envelopeTail)
    }

    func testFailureEvents() throws {
        try assertWire(event(.recordingFailed(.init(code: .displayUnavailable, message: "no X display given and DISPLAY is not set",
                                                    phase: .start)), session: "cap-x1"),
                       #"{"data":{"code":"DISPLAY_UNAVAILABLE","message":"no X display given and DISPLAY is not set","phase":"start"},"event":"recording-failed","sessionId":"cap-x1","#
                       + Self.envelopeTail)
        let failed = RecordingSummary(sessionId: "cap-x-loss", outputDirectory: "/s/cap-x-loss", durationNs: 5_000_000_000,
                                      channels: [Self.videoStats], error: "the X server went away", errorCode: "DISPLAY_UNAVAILABLE")
        try assertWire(event(.recordingFailed(.init(CaptureError(.displayUnavailable, "the X server went away"), phase: .recording,
                                                    summary: failed)), session: "cap-x-loss"),
                       #"{"data":{"code":"DISPLAY_UNAVAILABLE","message":"the X server went away","phase":"recording","summary":{"channels":["#
                       + Self.videoStatsJSON
                       + #"],"durationNs":5000000000,"error":"the X server went away","errorCode":"DISPLAY_UNAVAILABLE","outputDirectory":"/s/cap-x-loss","sessionId":"cap-x-loss"}},"event":"recording-failed","sessionId":"cap-x-loss","#
                       + Self.envelopeTail)

        // The four channel-errors the monitor sends: a stall and its end, an audio interruption and its end.
        try assertWire(event(.channelError(.init(code: .channelStalled, message: "display:1 has produced no media for 4.0 s while the session is active",
                                                 recovered: false)), session: "cap-stall", channel: "display:1"),
                       #"{"channel":"display:1","data":{"code":"CHANNEL_STALLED","message":"display:1 has produced no media for 4.0 s while the session is active","recovered":false},"event":"channel-error","sessionId":"cap-stall","#
                       + Self.envelopeTail)
        try assertWire(event(.channelError(.init(code: .channelStalled, message: "display:1 produces media again", recovered: true)),
                             session: "cap-stall", channel: "display:1"),
                       #"{"channel":"display:1","data":{"code":"CHANNEL_STALLED","message":"display:1 produces media again","recovered":true},"event":"channel-error","sessionId":"cap-stall","#
                       + Self.envelopeTail)
        try assertWire(event(.channelError(.init(code: .audioUnavailable, message: "audio was interrupted", recovered: false, interruptions: 1)),
                             session: "cap-audio-loss", channel: "mic:default"),
                       #"{"channel":"mic:default","data":{"code":"AUDIO_UNAVAILABLE","interruptions":1,"message":"audio was interrupted","recovered":false},"event":"channel-error","sessionId":"cap-audio-loss","#
                       + Self.envelopeTail)
        try assertWire(event(.channelError(.init(code: .audioUnavailable, message: "audio is back", recovered: true, silenceFilledMs: 1500)),
                             session: "cap-audio-loss", channel: "mic:default"),
                       #"{"channel":"mic:default","data":{"code":"AUDIO_UNAVAILABLE","message":"audio is back","recovered":true,"silenceFilledMs":1500},"event":"channel-error","sessionId":"cap-audio-loss","#
                       + Self.envelopeTail)
    }

    func testDisplayEvents() throws {
        try assertWire(event(.displayChanged(.init(state: .changed, monitor: .init(name: "DUMMY0", x: 0, y: 0, width: 1680, height: 1050),
                                                   output: .init(width: 1920, height: 1080),
                                                   picture: .init(x: 96, y: 0, width: 1728, height: 1080), atNs: 3_033_333_333)),
                             session: "cap-layout", channel: "display:1"),
                       #"{"channel":"display:1","data":{"atNs":3033333333,"monitor":{"height":1050,"name":"DUMMY0","width":1680,"x":0,"y":0},"output":{"height":1080,"width":1920},"picture":{"height":1080,"width":1728,"x":96,"y":0},"state":"changed"},"event":"display-changed","sessionId":"cap-layout","#
                       + Self.envelopeTail)
        try assertWire(event(.displayChanged(.init(state: .lost, monitor: .init(name: "DUMMY1", x: 1920, y: 0, width: 1280, height: 1024),
                                                   output: .init(width: 1280, height: 1024),
                                                   picture: .init(x: 0, y: 0, width: 1280, height: 1024), atNs: 1)),
                             session: "cap-layout", channel: "display:2"),
                       #"{"channel":"display:2","data":{"atNs":1,"monitor":{"height":1024,"name":"DUMMY1","width":1280,"x":1920,"y":0},"output":{"height":1024,"width":1280},"picture":{"height":1024,"width":1280,"x":0,"y":0},"state":"lost"},"event":"display-changed","sessionId":"cap-layout","#
                       + Self.envelopeTail)

        try assertWire(event(.screenConsent(.init(state: .asking, reason: "no kept consent for Meta-0", monitor: "Meta-0")),
                             session: "wl-1", channel: "display:1"),
                       #"{"channel":"display:1","data":{"monitor":"Meta-0","reason":"no kept consent for Meta-0","state":"asking"},"event":"screen-consent","sessionId":"wl-1","#
                       + Self.envelopeTail)
        try assertWire(event(.screenConsent(.init(state: .mismatch, reason: "another monitor was shared", monitor: "Meta-0",
                                                  sharedMonitor: "Meta-1")), session: "wl-1", channel: "display:1"),
                       #"{"channel":"display:1","data":{"monitor":"Meta-0","reason":"another monitor was shared","sharedMonitor":"Meta-1","state":"mismatch"},"event":"screen-consent","sessionId":"wl-1","#
                       + Self.envelopeTail)
        // requestPermission's: no session, no channel, no monitor known yet.
        try assertWire(event(.screenConsent(.init(state: .timedOut, reason: "nobody answered")), session: nil),
                       #"{"data":{"reason":"nobody answered","state":"timed-out"},"event":"screen-consent","#
                       + Self.envelopeTail)
    }

    func testUploadEvents() throws {
        let uplink = "ws://127.0.0.1:8470/capture/uplink"
        try assertWire(event(.uploadProgress(.init(connected: true, chunksUploaded: 3, bytesUploaded: 1_396_464, chunksPending: 2,
                                                   bytesPending: 65_988, uploadLagMs: 812, endpoint: uplink))),
                       #"{"data":{"bytesPending":65988,"bytesUploaded":1396464,"chunksPending":2,"chunksUploaded":3,"connected":true,"endpoint":"ws://127.0.0.1:8470/capture/uplink","uploadLagMs":812},"event":"upload-progress","sessionId":"cap-example-1","#
                       + Self.envelopeTail)

        // The expiry check (no session was ever started: no sessionId), then the endpoint's refusal.
        try assertWire(event(.tokenExpired(.init(message: "the upload token expired; send updateToken with a new one", expiredAt: 1_700_000_000)),
                             session: nil),
                       #"{"data":{"expiredAt":1700000000,"message":"the upload token expired; send updateToken with a new one"},"event":"token-expired","#
                       + Self.envelopeTail)
        try assertWire(event(.tokenExpired(.init(message: "the endpoint refused the upload token (revoked); send updateToken with a new one",
                                                 reason: .revoked, closeCode: 4012))),
                       #"{"data":{"closeCode":4012,"message":"the endpoint refused the upload token (revoked); send updateToken with a new one","reason":"revoked"},"event":"token-expired","sessionId":"cap-example-1","#
                       + Self.envelopeTail)

        // A refusal always carries closeCode (null: the endpoint gave none); an upload that
        // could not begin never has the key.
        try assertWire(event(.uploadFailed(.init(code: .uploadRefused, message: "no such session", closeCode: 4004))),
                       #"{"data":{"closeCode":4004,"code":"UPLOAD_REFUSED","message":"no such session"},"event":"upload-failed","sessionId":"cap-example-1","#
                       + Self.envelopeTail)
        try assertWire(event(.uploadFailed(.init(code: .uploadRefused, message: "closed"))),
                       #"{"data":{"closeCode":null,"code":"UPLOAD_REFUSED","message":"closed"},"event":"upload-failed","sessionId":"cap-example-1","#
                       + Self.envelopeTail)
        try assertWire(event(.uploadFailed(.init(code: .invalidRequest, message: "not an uplink URL"))),
                       #"{"data":{"code":"INVALID_REQUEST","message":"not an uplink URL"},"event":"upload-failed","sessionId":"cap-example-1","#
                       + Self.envelopeTail)

        try assertWire(event(.endpointIncompatible(.init(endpoint: uplink, httpStatus: 404, message: "not an uplink"))),
                       #"{"data":{"code":"ENDPOINT_INCOMPATIBLE","endpoint":"ws://127.0.0.1:8470/capture/uplink","httpStatus":404,"message":"not an uplink"},"event":"endpoint-incompatible","sessionId":"cap-example-1","#
                       + Self.envelopeTail)
        try assertWire(event(.endpointIncompatible(.init(endpoint: uplink, httpStatus: nil, message: "no welcome"))),
                       #"{"data":{"code":"ENDPOINT_INCOMPATIBLE","endpoint":"ws://127.0.0.1:8470/capture/uplink","httpStatus":null,"message":"no welcome"},"event":"endpoint-incompatible","sessionId":"cap-example-1","#
                       + Self.envelopeTail)
    }

    /// Every event has a literal above (the four tests together).
    func testEveryEventIsPinned() throws {
        try testSessionEvents()
        try testFailureEvents()
        try testDisplayEvents()
        try testUploadEvents()
        XCTAssertEqual(pinned, Set(ControlEventName.allCases))
    }

    func testAClientSkipsWhatItDoesNotKnowAndRefusesWhatIsMalformed() throws {
        func message(_ json: String) throws -> JSONValue { try JSONCoding.decoder.decode(JSONValue.self, from: Data(json.utf8)) }
        // A response, and an event a newer daemon may send: not events to this client.
        XCTAssertNil(try ControlEvent(message: message(#"{"type":"response","commandId":"x","status":"success","result":null}"#)))
        XCTAssertNil(try ControlEvent(message: message(#"{"type":"event","event":"recording-teleported","timestampUnixNs":1,"data":{}}"#)))
        XCTAssertNil(try ControlEvent(message: message("[1]")))
        // Unknown fields are ignored.
        let extra = try XCTUnwrap(try ControlEvent(message: message(
            #"{"type":"event","event":"recording-paused","timestampUnixNs":5,"new":1,"data":{"atNs":1,"pausedTracks":[],"tracks":["screen"],"more":true}}"#)))
        XCTAssertEqual(extra.recordingPaused, .init(tracks: [.screen], atNs: 1, pausedTracks: []))
        XCTAssertNil(extra.recordingResumed)
        XCTAssertNil(extra.sessionId)
        // A known event without its fields, or with a phase not in the protocol, is INTERNAL_ERROR.
        for bad in [#"{"type":"event","event":"recording-started","timestampUnixNs":1,"data":{}}"#,
                    #"{"type":"event","event":"recording-failed","timestampUnixNs":1,"data":{"code":"IO_ERROR","message":"m","phase":"later"}}"#] {
            XCTAssertThrowsError(try ControlEvent(message: message(bad)), bad) { error in
                XCTAssertEqual((error as? CaptureError)?.code, .internalError)
            }
        }
    }

    func testChannelIDOfAnEvent() {
        XCTAssertEqual(event(.channelError(.init(code: .audioUnavailable, message: "m", recovered: true)), channel: "mic:default").channelID,
                       .microphone(nil))
        XCTAssertNil(event(.recordingStarted(.init(sessionId: "s", state: .active, channels: [], outputDirectory: "", startedAt: ""))).channelID)
    }
}

/// The results, byte for byte as the daemon answers them (through `JSONValue`, as ControlService does).
final class ControlResultWireTests: XCTestCase {
    private func assertWire<T: Codable & Equatable>(_ result: T, _ expected: String,
                                                    file: StaticString = #filePath, line: UInt = #line) throws {
        let response = ControlResponse.success(commandId: "c", result: try JSONValue(encoding: result))
        XCTAssertEqual(String(decoding: response.encodedLine(), as: UTF8.self),
                       #"videodb_recorder|{"commandId":"c","result":"# + expected + #","status":"success","type":"response"}"# + "\n",
                       file: file, line: line)
        XCTAssertEqual(try JSONCoding.decoder.decode(T.self, from: Data(expected.utf8)), result, file: file, line: line)
    }

    func testPingAndInit() throws {
        let info = DaemonInfo(version: "0.2.0", protocol: 1, pid: 17056, platform: "linux-x11", uptimeNs: 9_212_364_203,
                              clients: 1, requests: 1, badRequests: 0)
        try assertWire(info, #"{"badRequests":0,"clients":1,"pid":17056,"platform":"linux-x11","protocol":1,"requests":1,"uptimeNs":9212364203,"version":"0.2.0"}"#)
        var pong = info
        pong.pong = true
        try assertWire(pong, #"{"badRequests":0,"clients":1,"pid":17056,"platform":"linux-x11","pong":true,"protocol":1,"requests":1,"uptimeNs":9212364203,"version":"0.2.0"}"#)
    }

    func testGetChannels() throws {
        try assertWire(ChannelsResult(
            channels: [.init(channelId: "display:1", type: .video, name: "Display 1 (screen 1920x1080+0+0)"),
                       .init(channelId: "mic:default", type: .audio, name: "Default microphone (rig-mic)")],
            problems: [], displayBackend: DisplayBackendInfo(backend: "x11", reason: "DISPLAY=:1")),
            #"{"channels":[{"channel_id":"display:1","name":"Display 1 (screen 1920x1080+0+0)","type":"video"},{"channel_id":"mic:default","name":"Default microphone (rig-mic)","type":"audio"}],"displayBackend":{"backend":"x11","reason":"DISPLAY=:1"},"problems":[]}"#)
    }

    func testTracksTokenSubscriptionAndShutdown() throws {
        try assertWire(TracksResult(pausedTracks: [.mic], atNs: 2_943_911_983, changed: [.mic]),
                       #"{"atNs":2943911983,"changed":["mic"],"pausedTracks":["mic"]}"#)
        try assertWire(TracksResult(pausedTracks: [], atNs: 7, changed: []), #"{"atNs":7,"changed":[],"pausedTracks":[]}"#)
        try assertWire(UpdateTokenResult(expiresAt: 1_700_000_000, endpoint: "ws://127.0.0.1:8470/capture/uplink", uploads: ["cap-1a2b"]),
                       #"{"accepted":true,"endpoint":"ws://127.0.0.1:8470/capture/uplink","expiresAt":1700000000,"uploads":["cap-1a2b"]}"#)
        try assertWire(UpdateTokenResult(expiresAt: nil, endpoint: nil, uploads: []), #"{"accepted":true,"uploads":[]}"#)

        let expired = ControlEvent(.tokenExpired(.init(message: "expired", expiredAt: 1_700_000_000)), sessionId: nil,
                                   timestampUnixNs: 1_795_332_866_360_327_524)
        try assertWire(SubscriptionResult(subscribed: [.tokenExpired], recent: [expired]),
                       #"{"recent":[{"data":{"expiredAt":1700000000,"message":"expired"},"event":"token-expired","timestamp":"2026-11-22T07:34:26.360Z","timestampUnixNs":1795332866360327524,"type":"event"}],"subscribed":["token-expired"]}"#)
        try assertWire(SubscriptionResult(subscribed: [.channelError, .recordingFailed]), #"{"subscribed":["channel-error","recording-failed"]}"#)
        // A newer daemon's events and names are left out, not a failure.
        XCTAssertEqual(try JSONCoding.decoder.decode(SubscriptionResult.self, from: Data(
            #"{"recent":[{"data":{},"event":"recording-teleported","timestampUnixNs":1,"type":"event"}],"subscribed":["recording-teleported","upload-failed"]}"#.utf8)),
            SubscriptionResult(subscribed: [.uploadFailed], recent: []))
        try assertWire(ShutdownResult(), #"{"shuttingDown":true}"#)
    }

    func testUploadInStatus() throws {
        let progress = UploadProgress(phase: .needsToken, connected: false, chunksUploaded: 3, bytesUploaded: 1000, chunksPending: 2,
                                      bytesPending: 500, duplicates: 0, refusedChunks: 0, protocolViolations: 0, unreadableChunks: 0,
                                      connections: 1, incompatibleEndpoint: false, uploadLagMs: 2100,
                                      chunksUploadedByChannel: ["display:1": 3], threadCPUNs: 12_000)
        try assertWire(progress, #"{"bytesPending":500,"bytesUploaded":1000,"chunksPending":2,"chunksUploaded":3,"chunksUploadedByChannel":{"display:1":3},"connected":false,"connections":1,"duplicates":0,"incompatibleEndpoint":false,"phase":"needsToken","protocolViolations":0,"refusedChunks":0,"threadCPUNs":12000,"unreadableChunks":0,"uploadLagMs":2100}"#)
        // Every phase's wire name, as getStatus documents them.
        XCTAssertEqual(UploadPhase.allCases.map(\.rawValue),
                       ["waiting", "connecting", "greeting", "streaming", "ending", "finished", "needsToken", "stopped"])
    }
}
