import CaptureCore
import CaptureTestSupport
import Foundation
import PulseCapture
import Synchronization
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// A sink that keeps everything it is given (left and right samples, block times, events), with
/// the frame position of each event, for assertions after the recording.
final class RecordingSink: AudioCaptureSink {
    struct Block {
        var captureTime: Int64
        var arrival: Int64
        var frameCount: Int
        var firstFrame: Int     // position in `samples` (frames)
    }
    struct Event {
        var atFrame: Int        // frames delivered before the event
        var time: Int64
        var text: String
    }
    struct State {
        var samples: [Float] = []          // interleaved stereo
        var blocks: [Block] = []
        var discontinuities: [Event] = []
        var failures: [(atFrame: Int, error: CaptureError)] = []
        var callbacksAfterStop = 0
        var stopped = false
        var wrongFormat = 0
    }

    let state = Mutex(State())
    /// Called (on the recorder's thread) after each block is stored; may stop the recorder.
    let onBlock: (@Sendable (Int) -> Void)?

    init(onBlock: (@Sendable (Int) -> Void)? = nil) {
        self.onBlock = onBlock
    }

    func audioCapture(didCapture samples: UnsafeBufferPointer<Float>, frameCount: Int, captureTime: Int64) {
        let now = MonotonicClock.now()
        let total = state.withLock { s -> Int in
            if s.stopped { s.callbacksAfterStop += 1 }
            if samples.count != frameCount * 2 { s.wrongFormat += 1 }
            s.blocks.append(Block(captureTime: captureTime, arrival: now, frameCount: frameCount,
                                  firstFrame: s.samples.count / 2))
            s.samples.append(contentsOf: samples)
            return s.blocks.count
        }
        onBlock?(total)
    }

    func audioCaptureDidDiscontinue(reason: String) {
        let now = MonotonicClock.now()
        state.withLock { s in
            if s.stopped { s.callbacksAfterStop += 1 }
            s.discontinuities.append(Event(atFrame: s.samples.count / 2, time: now, text: reason))
        }
    }

    func audioCapture(didFail error: CaptureError) {
        state.withLock { s in
            if s.stopped { s.callbacksAfterStop += 1 }
            s.failures.append((s.samples.count / 2, error))
        }
    }

    /// Marks the point after which any callback is a bug.
    func markStopped() { state.withLock { $0.stopped = true } }

    var frames: Int { state.withLock { $0.samples.count / 2 } }
    var snapshot: State { state.withLock { $0 } }

    /// Waits (polling) until `condition` holds on the state, or `timeout` passes.
    @discardableResult
    func wait(timeout: Double, _ condition: (State) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if state.withLock({ condition($0) }) { return true }
            usleep(20_000)
        }
        return state.withLock { condition($0) }
    }
}

enum Signal {
    /// Left channel of interleaved stereo, frames [from, to).
    static func left(_ samples: [Float], from: Int, to: Int) -> [Float] {
        let a = max(0, from), b = min(samples.count / 2, to)
        guard b > a else { return [] }
        return (a..<b).map { samples[2 * $0] }
    }

    /// Goertzel power of `frequency` normalised so that a pure sine at that frequency gives ~1
    /// (the fraction of the signal's energy in that tone).
    static func toneFraction(_ x: [Float], frequency: Double, sampleRate: Double = 48_000) -> Double {
        guard !x.isEmpty else { return 0 }
        let coeff = 2 * cos(2 * Double.pi * frequency / sampleRate)
        let n = Double(x.count)
        var s1 = 0.0, s2 = 0.0, energy = 0.0, sumH = 0.0, sumH2 = 0.0
        for (i, v) in x.enumerated() {
            let h = 0.5 - 0.5 * cos(2 * Double.pi * Double(i) / n)   // Hann: keeps other tones out
            let s = Double(v) * h
            let s0 = s + coeff * s1 - s2
            s2 = s1
            s1 = s0
            energy += s * s
            sumH += h
            sumH2 += h * h
        }
        guard energy > 0 else { return 0 }
        let power = s1 * s1 + s2 * s2 - coeff * s1 * s2
        // A windowed sine of amplitude A: power ~ (A * sumH / 2)^2 and energy ~ A^2 / 2 * sumH2.
        return (power / (sumH * sumH / 4)) / (energy / (sumH2 / 2))
    }

    /// Writes interleaved stereo Float32 48 kHz as a WAV file (so ffprobe/ffmpeg can check it).
    static func writeWAV(_ samples: [Float], to path: String) throws {
        var data = Data()
        func u32(_ v: UInt32) { var l = v.littleEndian; withUnsafeBytes(of: &l) { data.append(contentsOf: $0) } }
        func u16(_ v: UInt16) { var l = v.littleEndian; withUnsafeBytes(of: &l) { data.append(contentsOf: $0) } }
        let bytes = UInt32(samples.count * 4)
        data.append(contentsOf: Array("RIFF".utf8)); u32(36 + bytes)
        data.append(contentsOf: Array("WAVE".utf8))
        data.append(contentsOf: Array("fmt ".utf8)); u32(16)
        u16(3); u16(2); u32(48_000); u32(48_000 * 8); u16(8); u16(32)   // IEEE float, stereo
        data.append(contentsOf: Array("data".utf8)); u32(bytes)
        samples.withUnsafeBytes { data.append(contentsOf: $0) }
        try data.write(to: URL(fileURLWithPath: path))
    }
}

extension XCTestCase {
    func requireRig(_ options: RigOptions? = nil) throws -> TestRig {
        do {
            if let options { return try TestRig.start(options) }
            return try TestRig.shared()
        } catch {
            XCTFail("the test rig did not start: \(error)")
            throw error
        }
    }
}
