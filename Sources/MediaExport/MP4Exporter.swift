internal import CFFmpeg
public import CaptureCore

/// One MP4 from a session's chunks, with libavformat: the video copied as it
/// is (no re-encode); track 2, the default audio, the stored audio channels
/// decoded, summed sample by sample on the session timeline (clipped at full
/// scale) and encoded as AAC; then every audio channel copied as a track of
/// its own. `+faststart`, so a player can start before the whole file arrived.
///
/// The chunks come from clients, so nothing in them sizes the work: only H.264 video
/// and AAC audio are read (no other decoder is ever opened, not even to probe), packets
/// outside the declared timeline are left out, and a gap in a channel costs no memory
/// (decoded audio is kept in blocks placed on the timeline; silence is never stored).
public enum MP4Exporter {
    public static func export(_ input: ExportInput, to path: String) throws(CaptureError) -> ExportSummary {
        av_log_set_level(AV_LOG_ERROR)
        let job = try ExportJob(input: input, path: path)
        return try job.run()
    }
}
