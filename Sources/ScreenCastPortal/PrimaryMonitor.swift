import CaptureCore
public import SessionBus

/// Which monitor the desktop calls primary. Wayland itself has no such notion; GNOME says it
/// in `org.gnome.Mutter.DisplayConfig` (no dialog, no permission needed). Other desktops:
/// nil, and the caller takes the monitor at the origin.
public enum PrimaryMonitor {
    /// The primary monitor's connector ("DP-1", "Meta-0"), or nil when the desktop does not say.
    public static func connector(bus: SessionBus) -> String? {
        // GetCurrentState: (u serial, a((ssss)a(siiddada{sv})a{sv}) monitors,
        //                   a(iiduba(ssss)a{sv}) logical monitors, a{sv} properties)
        guard let reply = try? bus.call("org.gnome.Mutter.DisplayConfig", "/org/gnome/Mutter/DisplayConfig",
                                        "org.gnome.Mutter.DisplayConfig", "GetCurrentState",
                                        timeoutNs: 2_000_000_000) else { return nil }
        let r = reply.reader
        do throws(CaptureError) {
            _ = try r.readUInt32()
            try r.skip()
            try r.enterArray("(iiduba(ssss)a{sv})")
            while r.peek()?.type == "r" {
                try r.enterStruct("iiduba(ssss)a{sv}")
                _ = try r.readInt32()
                _ = try r.readInt32()
                _ = try r.readDouble()
                _ = try r.readUInt32()
                let primary = try r.readBool()
                var connectors: [String] = []
                try r.enterArray("(ssss)")
                while r.peek()?.type == "r" {
                    try r.enterStruct("ssss")
                    connectors.append(try r.readString())
                    while r.peek() != nil { try r.skip() }
                    try r.exitContainer()
                }
                try r.exitContainer()
                try r.skip()
                try r.exitContainer()
                if primary, let first = connectors.first { return first }
            }
        } catch {
            return nil
        }
        return nil
    }
}
