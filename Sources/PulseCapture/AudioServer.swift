public import CaptureCore
import CPulse

/// One-shot queries of the audio server (PulseAudio, or PipeWire's pulse server).
public enum AudioServer {
    /// Connects (honours PULSE_SERVER / XDG_RUNTIME_DIR as libpulse does, unless `server` names one,
    /// e.g. "unix:/run/user/0/pulse/native"), lists sinks and sources, disconnects.
    /// No server / refused / timeout => `CaptureError(.audioUnavailable, ...)`. Never autospawns.
    /// Runs a private pa_mainloop on the calling thread; no other thread is involved.
    public static func snapshot(timeout: Duration = .seconds(3), server: String? = nil) throws(CaptureError)
        -> AudioServerSnapshot
    {
        let query = SnapshotQuery()
        return try query.run(timeout: timeout, server: server)
    }
}

/// State of one snapshot. Lives on the caller's thread only (pa_mainloop runs there): not Sendable.
private final class SnapshotQuery {
    var context: OpaquePointer?
    var failure: CaptureError?
    var pendingLists = 0
    var serverName = ""
    var serverVersion = ""
    var defaultSink: String?
    var defaultSource: String?
    var sinks: [(index: UInt32, device: AudioDevice)] = []
    var sources: [(device: AudioDevice, monitorOfIndex: UInt32)] = []
    var done = false

    func run(timeout: Duration, server: String?) throws(CaptureError) -> AudioServerSnapshot {
        guard let mainloop = pa_mainloop_new() else {
            throw CaptureError(.internalError, "pa_mainloop_new failed (out of memory?)")
        }
        defer { pa_mainloop_free(mainloop) }
        guard let ctx = pa_context_new(pa_mainloop_get_api(mainloop), "capture-agent") else {
            throw CaptureError(.internalError, "pa_context_new failed (out of memory?)")
        }
        context = ctx
        defer {
            pa_context_set_state_callback(ctx, nil, nil)
            pa_context_disconnect(ctx)
            pa_context_unref(ctx)
            context = nil
        }
        let me = Unmanaged.passUnretained(self).toOpaque()
        pa_context_set_state_callback(ctx, { c, userdata in
            guard let c, let userdata else { return }
            Unmanaged<SnapshotQuery>.fromOpaque(userdata).takeUnretainedValue().stateChanged(c)
        }, me)
        let target = Pulse.describeServer(server)
        if pa_context_connect(ctx, server, PA_CONTEXT_NOAUTOSPAWN, nil) < 0 {
            throw CaptureError(.audioUnavailable,
                "cannot connect to the audio server (\(target)): \(Pulse.errorText(context: ctx)); "
                + "start PulseAudio/PipeWire or set PULSE_SERVER / XDG_RUNTIME_DIR")
        }
        let deadline = MonotonicClock.now() + timeout.nanoseconds
        while !done && failure == nil {
            let remaining = deadline - MonotonicClock.now()
            if remaining <= 0 {
                throw CaptureError(.audioUnavailable,
                    "the audio server (\(target)) did not answer within \(timeout); is it hung?")
            }
            // prepare/poll/dispatch so the poll never waits past the deadline.
            if pa_mainloop_prepare(mainloop, Int32(min(remaining / 1000, 1_000_000))) < 0 { break }
            if pa_mainloop_poll(mainloop) < 0 { break }
            if pa_mainloop_dispatch(mainloop) < 0 { break }
        }
        if let failure { throw failure }
        guard done else {
            throw CaptureError(.audioUnavailable, "the audio server connection (\(target)) broke off")
        }
        var sinkNames: [UInt32: String] = [:]
        for s in sinks { sinkNames[s.index] = s.device.name }
        let resolvedSources = sources.map { entry -> AudioDevice in
            var d = entry.device
            if d.isMonitor && d.monitorOfSink == nil { d.monitorOfSink = sinkNames[entry.monitorOfIndex] }
            return d
        }
        return AudioServerSnapshot(
            serverName: serverName, serverVersion: serverVersion,
            defaultSinkName: defaultSink, defaultSourceName: defaultSource,
            sources: resolvedSources, sinks: sinks.map(\.device))
    }

    func stateChanged(_ c: OpaquePointer) {
        switch pa_context_get_state(c) {
        case PA_CONTEXT_READY:
            let me = Unmanaged.passUnretained(self).toOpaque()
            pendingLists = 3
            pa_operation_unref(pa_context_get_server_info(c, { _, info, userdata in
                guard let userdata else { return }
                let q = Unmanaged<SnapshotQuery>.fromOpaque(userdata).takeUnretainedValue()
                if let info {
                    q.serverName = Pulse.string(info.pointee.server_name) ?? ""
                    q.serverVersion = Pulse.string(info.pointee.server_version) ?? ""
                    q.defaultSink = Pulse.string(info.pointee.default_sink_name)
                    q.defaultSource = Pulse.string(info.pointee.default_source_name)
                }
                q.listDone(ok: info != nil)
            }, me))
            pa_operation_unref(pa_context_get_sink_info_list(c, { _, info, eol, userdata in
                guard let userdata else { return }
                let q = Unmanaged<SnapshotQuery>.fromOpaque(userdata).takeUnretainedValue()
                if eol != 0 { q.listDone(ok: eol > 0); return }
                guard let i = info?.pointee, let name = Pulse.string(i.name) else { return }
                q.sinks.append((i.index, AudioDevice(name: name, description: Pulse.string(i.description) ?? name)))
            }, me))
            pa_operation_unref(pa_context_get_source_info_list(c, { _, info, eol, userdata in
                guard let userdata else { return }
                let q = Unmanaged<SnapshotQuery>.fromOpaque(userdata).takeUnretainedValue()
                if eol != 0 { q.listDone(ok: eol > 0); return }
                guard let i = info?.pointee, let name = Pulse.string(i.name) else { return }
                let isMonitor = i.monitor_of_sink != cpulse_invalid_index()
                q.sources.append((AudioDevice(
                    name: name, description: Pulse.string(i.description) ?? name,
                    isMonitor: isMonitor, monitorOfSink: isMonitor ? Pulse.string(i.monitor_of_sink_name) : nil),
                    i.monitor_of_sink))
            }, me))
        case PA_CONTEXT_FAILED, PA_CONTEXT_TERMINATED:
            if failure == nil && !done {
                failure = CaptureError(.audioUnavailable,
                    "cannot connect to the audio server: \(Pulse.errorText(context: c)); "
                    + "start PulseAudio/PipeWire or set PULSE_SERVER / XDG_RUNTIME_DIR")
            }
        default:
            break
        }
    }

    func listDone(ok: Bool) {
        if !ok, failure == nil {
            failure = CaptureError(.audioUnavailable,
                "the audio server refused to list devices: \(Pulse.errorText(context: context))")
        }
        pendingLists -= 1
        if pendingLists == 0 { done = true }
    }
}
