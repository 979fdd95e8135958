/// What became of a request to share a monitor through the desktop's screen-sharing dialog:
/// the pipeline reports it and the `screen-consent` event carries it, as one type. The raw
/// values are the wire names of docs/control-protocol.md; never rename one.
public enum ScreenConsentState: String, Codable, Sendable {
    /// The desktop's dialog is about to ask (no kept consent, or it no longer restores).
    case asking
    /// A kept token restored the earlier choice: no dialog.
    case restored
    /// The user shared a monitor in the dialog.
    case granted
    /// The user declined (Cancel), or the portal refused.
    case denied
    /// Nobody answered the dialog within `screen_consent_timeout`.
    case timedOut = "timed-out"
    /// The monitor shared in the dialog is not the channel's: nothing is recorded from it.
    case mismatch
}
