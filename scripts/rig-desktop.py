#!/usr/bin/python3
"""The D-Bus side of `scripts/rig --desktop gnome-wayland`: looks at a headless GNOME
(mutter) session and works it the way a person at it would.

Runs as the rig user inside the session's environment (scripts/rig feeds it to
/usr/bin/python3 on stdin):

    rig-desktop.py wait-name NAME [--timeout S]     wait until NAME is owned on the bus
    rig-desktop.py name-pid NAME                    print the PID owning NAME
    rig-desktop.py wait-backend [--timeout S]       print xdg-desktop-portal-gnome's ScreenCast
                                                    version once it serves ScreenCast
    rig-desktop.py wait-portal [--timeout S]        print the ScreenCast portal's version
    rig-desktop.py monitors [--timeout S] [--arrange] print RIG_MONITORS= and RIG_MONITOR_NAMES=
    rig-desktop.py screenshot [--monitor N]         PNG of monitor N on stdout
    rig-desktop.py find-window --size WxH [--timeout S]
                                                    print WxH+X+Y of the window of that size
    rig-desktop.py pointer X,Y                      move the pointer there
    rig-desktop.py pointer-daemon                   the rig's mouse (started by rig up)
    rig-desktop.py consent share|cancel [--monitor N] [--timeout S] [--save-dir D]
    rig-desktop.py monitor-mode --monitor N (--transform T | --scale S | --mode WxH)

Monitors are numbered from 1 in mutter's connector order (Meta-0, Meta-1, ...: the order
of --virtual-monitor). Coordinates are mutter's layout coordinates.
Errors: one line on stderr and exit 1; consent exits 3 when no dialog showed up in time.
"""
import argparse
import os
import re
import struct
import subprocess
import sys
import time
import zlib

import dbus
import dbus.service
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

MUTTER_DISPLAY = ('org.gnome.Mutter.DisplayConfig', '/org/gnome/Mutter/DisplayConfig')
MUTTER_SCREENCAST = ('org.gnome.Mutter.ScreenCast', '/org/gnome/Mutter/ScreenCast')
MUTTER_REMOTE = ('org.gnome.Mutter.RemoteDesktop', '/org/gnome/Mutter/RemoteDesktop')
PORTAL = ('org.freedesktop.portal.Desktop', '/org/freedesktop/portal/desktop')
BACKEND = ('org.freedesktop.impl.portal.desktop.gnome', '/org/freedesktop/portal/desktop')
POINTER_SERVICE = ('org.capture_rig.Pointer', '/org/capture_rig/Pointer')
POINTER_INTERFACE = 'org.capture_rig.Pointer'
BTN_LEFT = 0x110  # linux/input-event-codes.h


class Failure(Exception):
    """A reason to stop, printed as one line; exit_code 3 = nothing showed up in time."""

    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code


class TimedOut(Failure):
    """wait_for gave up."""


def bus():
    DBusGMainLoop(set_as_default=True)
    return dbus.SessionBus()


def wait_for(what, timeout, probe, interval=0.05):
    """Calls probe() until it returns something other than None; TimedOut after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise TimedOut('%s: not within %g s' % (what, timeout))
        time.sleep(interval)


def has_owner(session, name):
    # NameHasOwner, not a call to NAME: a call would make the bus start a second instance.
    return bool(session.get_object('org.freedesktop.DBus', '/org/freedesktop/DBus').NameHasOwner(
        name, dbus_interface='org.freedesktop.DBus'))


def wait_name(session, name, timeout):
    wait_for('nobody owns %s on the session bus' % name, timeout,
             lambda: True if has_owner(session, name) else None)


def name_pid(session, name):
    if not has_owner(session, name):
        raise Failure('nobody owns %s on the session bus' % name)
    return int(session.get_object('org.freedesktop.DBus', '/org/freedesktop/DBus')
               .GetConnectionUnixProcessID(name, dbus_interface='org.freedesktop.DBus'))


def backend_version(session, timeout):
    """The ScreenCast version of xdg-desktop-portal-gnome, once it serves ScreenCast: it
    takes its bus name first and exports the interface only after it has found mutter,
    and a request in between fails ("No such interface")."""
    wait_name(session, BACKEND[0], timeout)
    backend = session.get_object(*BACKEND)

    def probe():
        try:
            return int(backend.Get('org.freedesktop.impl.portal.ScreenCast', 'version',
                                   dbus_interface='org.freedesktop.DBus.Properties'))
        except dbus.DBusException:
            return None
    return wait_for('%s does not serve ScreenCast' % BACKEND[0], timeout, probe)


def portal_version(session, timeout):
    wait_name(session, PORTAL[0], timeout)
    portal = session.get_object(*PORTAL)
    return int(portal.Get('org.freedesktop.portal.ScreenCast', 'version',
                          dbus_interface='org.freedesktop.DBus.Properties'))


# ------------------------------------------------------------------ monitors
class Mode:
    """One entry of a monitor's mode list (GetCurrentState)."""

    def __init__(self, mode):
        mode_id, w, h, _refresh, _preferred_scale, scales, props = mode
        self.id, self.w, self.h = str(mode_id), int(w), int(h)
        self.scales = [float(v) for v in scales]
        self.current = bool(props.get('is-current'))


class Monitor:
    """One monitor as mutter lays it out: connector, modes, logical monitor settings."""

    def __init__(self, connector, modes, listed, x, y, scale, transform, primary, layout_mode):
        self.connector = connector
        self.listed = listed  # its place among mutter's logical monitors (layout order)
        self.modes = modes
        self.mode = next(m for m in modes if m.current)
        self.x, self.y = x, y
        self.scale = scale
        self.transform = transform  # 0 normal, 1 90°, 2 180°, 3 270° (+4 flipped)
        self.primary = primary
        self.layout_mode = layout_mode

    @property
    def size(self):
        """The size it takes in the layout: its mode, turned by a quarter turn, and
        divided by its scale in the logical layout mode (1; 2 is physical)."""
        w, h = self.mode.w, self.mode.h
        if self.transform % 2:
            w, h = h, w
        if self.layout_mode == 1:
            w, h = round(w / self.scale), round(h / self.scale)
        return w, h

    def geometry(self):
        return '%dx%d+%d+%d' % (*self.size, self.x, self.y)


def display_state(session):
    """(serial, [Monitor] in connector order) from DisplayConfig.GetCurrentState."""
    config = session.get_object(*MUTTER_DISPLAY)
    serial, monitors, logical_monitors, props = config.GetCurrentState(
        dbus_interface='org.gnome.Mutter.DisplayConfig')
    layout_mode = int(props.get('layout-mode', 1))
    placed = {}
    for listed, (x, y, scale, transform, primary, specs, _props) in enumerate(logical_monitors):
        for spec in specs:
            placed[str(spec[0])] = (listed, int(x), int(y), float(scale), int(transform),
                                    bool(primary))
    result = []
    for spec, modes, _props in monitors:
        connector = str(spec[0])
        modes = [Mode(m) for m in modes]
        if connector in placed and any(m.current for m in modes):  # else: switched off
            result.append(Monitor(connector, modes, *placed[connector], layout_mode))
    result.sort(key=lambda m: connector_order(m.connector))
    return int(serial), result


def connector_order(connector):
    """Meta-10 after Meta-9."""
    head, _, number = connector.rpartition('-')
    return (head, int(number)) if number.isdigit() else (connector, 0)


def monitor(session, n):
    monitors = display_state(session)[1]
    if not 1 <= n <= len(monitors):
        raise Failure('no monitor %d (the session has %d)' % (n, len(monitors)))
    return monitors[n - 1]


def apply_layout(session, serial, monitors):
    """ApplyMonitorsConfig with method 1 (temporary: not written to monitors.xml), every
    monitor its own logical monitor, side by side in the given order, top-aligned (mutter
    refuses logical monitors that overlap or do not touch); updates the monitors' x and y
    to match and waits until mutter shows that layout."""
    x = 0
    layout = []
    for mon in monitors:
        mon.x, mon.y = x, 0
        layout.append((dbus.Int32(mon.x), dbus.Int32(mon.y), dbus.Double(mon.scale),
                       dbus.UInt32(mon.transform), dbus.Boolean(mon.primary),
                       [(mon.connector, mon.mode.id, dbus.Dictionary({}, signature='sv'))]))
        x += mon.size[0]
    session.get_object(*MUTTER_DISPLAY).ApplyMonitorsConfig(
        dbus.UInt32(serial), dbus.UInt32(1), layout, dbus.Dictionary({}, signature='sv'),
        dbus_interface='org.gnome.Mutter.DisplayConfig')
    wanted = sorted(m.geometry() for m in monitors)
    wait_for('mutter did not apply the layout %s' % ','.join(wanted), 5,
             lambda: True if sorted(m.geometry() for m in display_state(session)[1]) == wanted
             else None)


# ---------------------------------------------------------------- screenshots
class Frame:
    """An RGB picture of one monitor, placed at the monitor's layout position."""

    def __init__(self, w, h, rgb, x=0, y=0):
        self.w, self.h, self.rgb, self.x, self.y = w, h, rgb, x, y

    def pixel(self, x, y):
        i = (y * self.w + x) * 3
        return tuple(self.rgb[i:i + 3])

    def row(self, y):
        return self.rgb[y * self.w * 3:(y + 1) * self.w * 3]

    def save_png(self, path):
        rows = b''.join(b'\0' + self.row(y) for y in range(self.h))  # filter 0 on every row

        def chunk(kind, data):
            return (struct.pack('>I', len(data)) + kind + data
                    + struct.pack('>I', zlib.crc32(kind + data)))
        with open(path, 'wb') as f:
            f.write(b'\x89PNG\r\n\x1a\n'
                    + chunk(b'IHDR', struct.pack('>IIBBBBB', self.w, self.h, 8, 2, 0, 0, 0))
                    + chunk(b'IDAT', zlib.compress(rows, 1)) + chunk(b'IEND', b''))


# mutter's RecordMonitor cursor modes.
CURSOR_MODES = {'hidden': 0, 'embedded': 1, 'metadata': 2}


def record_monitor(session, connector, cursor='hidden'):
    """Starts a mutter screencast of one monitor (no consent: this is mutter's own API, the
    one the portal backend uses); returns (screencast session, PipeWire node id). By default
    the pointer is not drawn, so it never hides what we look for."""
    screencast = session.get_object(*MUTTER_SCREENCAST)
    path = screencast.CreateSession({}, dbus_interface='org.gnome.Mutter.ScreenCast')
    cast = session.get_object(MUTTER_SCREENCAST[0], path)
    stream_path = cast.RecordMonitor(connector, {'cursor-mode': dbus.UInt32(CURSOR_MODES[cursor])},
                                     dbus_interface='org.gnome.Mutter.ScreenCast.Session')
    stream = session.get_object(MUTTER_SCREENCAST[0], stream_path)
    loop = GLib.MainLoop()
    nodes = []

    def added(node):
        nodes.append(int(node))
        loop.quit()
    stream.connect_to_signal('PipeWireStreamAdded', added,
                             dbus_interface='org.gnome.Mutter.ScreenCast.Stream')
    cast.Start(dbus_interface='org.gnome.Mutter.ScreenCast.Session')
    # Usually well under a second; 5 s was not enough once in a loaded CI run (the consent
    # dialog's first screenshot, beside the lanes), so this waits as long as a frame grab.
    GLib.timeout_add(15000, loop.quit)
    loop.run()
    if not nodes:
        cast.Stop(dbus_interface='org.gnome.Mutter.ScreenCast.Session')
        raise Failure('mutter started no PipeWire stream for monitor %s within 15 s' % connector)
    return cast, nodes[0]


def grab(session, mon, encoder):
    """One frame of monitor mon through GStreamer, encoded by the given gst elements.
    A new stream always gets a first frame, even of a screen where nothing moves."""
    cast, node = record_monitor(session, mon.connector)
    try:
        pipeline = (['gst-launch-1.0', '-q', 'pipewiresrc', 'path=%d' % node, 'num-buffers=1',
                     '!', 'videoconvert', '!'] + encoder + ['!', 'fdsink', 'fd=1'])
        try:
            done = subprocess.run(pipeline, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  timeout=15)
        except subprocess.TimeoutExpired:
            raise Failure('no frame from monitor %s within 15 s' % mon.connector) from None
        if done.returncode != 0 or not done.stdout:
            raise Failure('gst-launch-1.0 got no frame of monitor %s: %s' % (
                mon.connector, done.stderr.decode(errors='replace').strip().splitlines()[-1:]))
        return done.stdout
    finally:
        cast.Stop(dbus_interface='org.gnome.Mutter.ScreenCast.Session')


def frame(session, mon):
    """A Frame of monitor mon (PPM from GStreamer: a header, then raw RGB)."""
    data = grab(session, mon, ['video/x-raw,format=RGB', '!', 'pnmenc'])
    # Exactly one whitespace byte ends the header: the first pixel byte may look like one.
    header = re.match(rb'P6\s+(\d+)\s+(\d+)\s+255\s', data)
    if not header:
        raise Failure('unexpected picture format from pnmenc: %r' % data[:20])
    w, h = int(header.group(1)), int(header.group(2))
    return Frame(w, h, data[header.end():header.end() + w * h * 3], mon.x, mon.y)


# ------------------------------------------------------------ looking at frames
# mutter without gnome-shell paints its desktop as a dark blue gradient (measured: red
# 13..27, green 38..74, blue 62..120); windows on it are told apart by colour alone.
DESKTOP_LO, DESKTOP_HI = (0, 25, 45), (45, 100, 145)
# The GTK 4 (libadwaita light) dialog: near-white greys, from the header bar's 235 and its
# buttons' 217 to the list rows' 255.
LIGHT_LO, LIGHT_HI = (200, 200, 200), (255, 255, 255)


class Mask:
    """One byte a pixel of a Frame: 1 where all three channels lie in [lo, hi]."""

    def __init__(self, frame, lo, hi):
        self.w, self.h = frame.w, frame.h
        # Whole planes at once (bytes.translate, big-int AND): a loop over 2 million
        # pixels in Python would take seconds.
        bits = -1
        for c in range(3):
            table = bytes(1 if lo[c] <= v <= hi[c] else 0 for v in range(256))
            bits &= int.from_bytes(frame.rgb[c::3].translate(table), 'big')
        self.data = bits.to_bytes(self.w * self.h, 'big')

    def row(self, y):
        return self.data[y * self.w:(y + 1) * self.w]

    def runs(self, y):
        """(start, end) of the runs of 1 in row y, end exclusive."""
        return [m.span() for m in re.finditer(b'\x01+', self.row(y))]

    def column(self, x):
        return self.data[x::self.w]


def find_window(frame, size):
    """(x, y, w, h) in layout coordinates of what covers the desktop in frame, if that is
    one rectangle of the given (w, h); else None."""
    desktop = Mask(frame, DESKTOP_LO, DESKTOP_HI)
    rows = [y for y in range(frame.h) if desktop.row(y).find(0) >= 0]
    if not rows:
        return None
    y0, y1 = rows[0], rows[-1] + 1
    x0 = min(desktop.row(y).find(0) for y in rows)
    x1 = max(desktop.row(y).rfind(0) for y in rows) + 1
    if (x1 - x0, y1 - y0) != size:
        return None
    return frame.x + x0, frame.y + y0, x1 - x0, y1 - y0


class Dialog:
    """Where the portal's consent dialog ("Screen Share") is, in layout coordinates:
    cancel and share are button centres, rows the centres of the monitor rows, top to
    bottom."""

    def __init__(self, box, cancel, share, share_enabled, rows):
        self.box, self.cancel, self.share = box, cancel, share
        self.share_enabled, self.rows = share_enabled, rows

    def __str__(self):
        x, y, w, h = self.box
        return ('dialog %dx%d+%d+%d, Cancel at %d,%d, Share at %d,%d (%s), monitor rows at %s'
                % (w, h, x, y, *self.cancel, *self.share,
                   'enabled' if self.share_enabled else 'disabled',
                   ' '.join('%d,%d' % r for r in self.rows) or 'none'))


def find_dialog(frame):
    """The consent dialog in frame, or None. It is the widest light rectangle on the dark
    desktop: a header bar (Cancel at its left end, Share at its right end, the title
    between), then a body whose list shows one white row a monitor."""
    light = Mask(frame, LIGHT_LO, LIGHT_HI)
    # The body's empty lines run light from edge to edge.
    widest = max(((e - s, s, e, y) for y in range(0, frame.h, 4) for s, e in light.runs(y)),
                 default=(0, 0, 0, 0))
    width, x0, x1, y_body = widest
    if width < 300:
        return None
    # Up and down along a column just inside the left edge (clear of the rounded corners
    # and of the Cancel label): the dialog's height.
    column = light.column(x0 + 12)
    y0 = column.rfind(0, 0, y_body) + 1
    y1 = column.find(0, y_body)
    y1 = frame.h if y1 < 0 else y1
    if y1 - y0 < 150:
        return None
    # The header bar ends where the body's colour (250) starts below its bottom border.
    header_end = next((y for y in range(y0, y1) if frame.pixel(x0 + 12, y)[0] >= 248), None)
    if header_end is None:
        return None
    header_y = (y0 + header_end) // 2
    cancel, share, share_enabled = header_buttons(frame, x0, x1, header_y)
    rows = monitor_rows(frame, (x0 + x1) // 2, header_end, y1)

    def to_layout(x, y):
        return frame.x + x, frame.y + y
    return Dialog((frame.x + x0, frame.y + y0, x1 - x0, y1 - y0), to_layout(*cancel),
                  to_layout(*share), share_enabled, [to_layout(x, y) for x, y in rows])


def header_buttons(frame, x0, x1, y):
    """Centres of the header bar's first and last button on line y, and whether the last
    one (Share, a blue "suggested action") is enabled: saturated, not washed out."""
    bar = frame.pixel(x0 + 2, y)
    # A button is what differs from the bar's colour; its label's letters stand apart by
    # a few pixels, so gaps shorter than 8 pixels stay inside one button.
    spans = []
    for x in range(x0 + 2, x1 - 2):
        if frame.pixel(x, y) != bar:
            if spans and x - spans[-1][1] < 8:
                spans[-1][1] = x + 1
            else:
                spans.append([x, x + 1])
    if len(spans) < 2:
        return (x0, y), (x1, y), False
    first, last = spans[0], spans[-1]
    share = ((last[0] + last[1]) // 2, y)
    r, _, b = frame.pixel(last[0] + 3, y)
    return ((first[0] + first[1]) // 2, y), share, b - r > 130


def monitor_rows(frame, x, y0, y1):
    """Centres of the pure white (255) runs of at least 20 pixels down column x between y0
    and y1: the list's rows (a grey line separates two rows)."""
    rows, start = [], None
    for y in range(y0, y1 + 1):
        white = y < y1 and frame.pixel(x, y) == (255, 255, 255)
        if white and start is None:
            start = y
        elif not white and start is not None:
            if y - start >= 20:
                rows.append((x, (start + y) // 2))
            start = None
    return rows


# -------------------------------------------------------------------- pointer
class Pointer:
    """A virtual pointer of mutter's RemoteDesktop API. It only moves relatively (absolute
    motion needs a screencast stream tied to the session), so every move first pushes
    the pointer into the top-left corner, where mutter stops it at 0,0."""

    def __init__(self, session):
        remote = session.get_object(*MUTTER_REMOTE)
        path = remote.CreateSession(dbus_interface='org.gnome.Mutter.RemoteDesktop')
        self.session = dbus.Interface(session.get_object(MUTTER_REMOTE[0], path),
                                      'org.gnome.Mutter.RemoteDesktop.Session')
        self.session.Start()

    def move_to(self, x, y):
        self.session.NotifyPointerMotionRelative(-100000.0, -100000.0)
        self.session.NotifyPointerMotionRelative(float(x), float(y))

    def click(self, x, y):
        self.move_to(x, y)
        time.sleep(0.1)  # as a hand would: the widget sees the pointer enter first
        self.session.NotifyPointerButton(BTN_LEFT, True)
        time.sleep(0.05)
        self.session.NotifyPointerButton(BTN_LEFT, False)


class PointerService(dbus.service.Object):
    """The rig's one mouse, kept for the session's lifetime. mutter draws the cursor (in
    screencasts too) only while the device that last moved it exists: a RemoteDesktop
    session per move would leave the pointer where it was put, but invisible."""

    def __init__(self, session):
        self.name = dbus.service.BusName(POINTER_SERVICE[0], session, do_not_queue=True)
        super().__init__(session, POINTER_SERVICE[1])
        self.pointer = Pointer(session)

    @dbus.service.method(POINTER_INTERFACE, in_signature='ii')
    def MoveTo(self, x, y):
        self.pointer.move_to(x, y)

    @dbus.service.method(POINTER_INTERFACE, in_signature='ii')
    def Click(self, x, y):
        self.pointer.click(x, y)


def pointer_service(session):
    if not has_owner(session, POINTER_SERVICE[0]):
        raise Failure('the rig\'s pointer (%s, started by rig up) does not run'
                      % POINTER_SERVICE[0])
    return dbus.Interface(session.get_object(*POINTER_SERVICE), POINTER_INTERFACE)


def parse_point(text):
    try:
        x, y = (int(v) for v in text.split(','))
    except ValueError:
        raise Failure('bad point %r (want X,Y)' % text) from None
    return x, y


# ----------------------------------------------------------------- commands
def cmd_wait_name(session, args):
    wait_name(session, args.name, args.timeout)


def cmd_name_pid(session, args):
    print(name_pid(session, args.name))


def cmd_wait_backend(session, args):
    print(backend_version(session, args.timeout))


def cmd_wait_portal(session, args):
    print(portal_version(session, args.timeout))


def cmd_monitors(session, args):
    def probe():
        try:
            return display_state(session)[1] or None
        except dbus.DBusException:
            return None  # mutter has not taken its name yet
    monitors = wait_for('mutter shows no monitor on org.gnome.Mutter.DisplayConfig',
                        args.timeout, probe, 0.1)
    if args.arrange and [m.x for m in monitors] != sorted(m.x for m in monitors):
        # mutter puts the largest monitor first; the rig's layout is the X11 rig's:
        # left to right in connector (= --virtual-monitor) order, the first one primary.
        for n, mon in enumerate(monitors):
            mon.primary = n == 0
        apply_layout(session, display_state(session)[0], monitors)
    print('RIG_MONITORS=' + ','.join(m.geometry() for m in monitors))
    print('RIG_MONITOR_NAMES=' + ','.join(m.connector for m in monitors))


def cmd_find_window(session, args):
    try:
        size = tuple(int(v) for v in args.size.split('x'))
    except ValueError:
        raise Failure('bad size %r (want WxH)' % args.size) from None

    def probe():
        for mon in display_state(session)[1]:
            found = find_window(frame(session, mon), size)
            if found:
                return found
        return None
    x, y, w, h = wait_for('no %s window on the screen' % args.size, args.timeout, probe, 0.2)
    print('%dx%d+%d+%d' % (w, h, x, y))


class Shots:
    """Keeps the frames consent looked at, for a person to check afterwards: while waiting
    only the latest of each monitor, then one per step."""

    def __init__(self, directory):
        self.directory = directory

    def keep(self, name, frame_):
        if self.directory:
            frame_.save_png(os.path.join(self.directory, name + '.png'))


def dialog_on_screen(session, shots, step):
    """The consent dialog on whichever monitor shows it, or None."""
    for n, mon in enumerate(display_state(session)[1], 1):
        shot = frame(session, mon)
        shots.keep('%s-monitor%d' % (step, n), shot)
        dialog = find_dialog(shot)
        if dialog:
            return dialog
    return None


def cmd_consent(session, args):
    shots = Shots(args.save_dir)
    try:
        dialog = wait_for('no consent dialog', args.timeout,
                          lambda: dialog_on_screen(session, shots, '1-waiting'), 0.2)
    except TimedOut:
        raise Failure('no consent dialog ("Screen Share") appeared within %g s' % args.timeout,
                      exit_code=3) from None
    print('rig-desktop: found the %s' % dialog, file=sys.stderr)
    pointer = pointer_service(session)
    if args.action == 'cancel':
        pointer.Click(*dialog.cancel)
    else:
        # The dialog lists the monitors in the order of mutter's logical monitors (left to
        # right), not in connector order: measured with the second monitor moved left.
        row = monitor(session, args.monitor).listed
        if row >= len(dialog.rows):
            raise Failure('the dialog lists %d monitor(s): no row for monitor %d'
                          % (len(dialog.rows), args.monitor))
        # Share stays disabled until a row is selected: look before pressing it. The
        # shell may drop a click that comes while the dialog is still opening (seen once
        # in a loaded CI run: the row drawn, the click lost, Share disabled for 5 s), and
        # selecting the row again is harmless, so a click that changed nothing is repeated.
        for attempt in range(1, 4):
            pointer.Click(*dialog.rows[row])
            try:
                dialog = wait_for('Share did not become enabled after selecting a monitor', 5,
                                  lambda: enabled(dialog_on_screen(session, shots, '2-selected')),
                                  0.2)
                break
            except TimedOut:
                if attempt == 3:
                    raise Failure('Share did not become enabled after selecting monitor '
                                  'row %d three times, 5 s each' % row) from None
                print('rig-desktop: Share still disabled 5 s after click %d on the row; '
                      'clicking it again' % attempt, file=sys.stderr)
        pointer.Click(*dialog.share)
    wait_for('the consent dialog is still on the screen', 10,
             lambda: True if dialog_on_screen(session, shots, '3-after') is None else None, 0.2)


def enabled(dialog):
    return dialog if dialog and dialog.share_enabled else None


def cmd_screenshot(session, args):
    png = grab(session, monitor(session, args.monitor), ['pngenc'])
    sys.stdout.buffer.write(png)


def cmd_pointer(session, args):
    pointer_service(session).MoveTo(*parse_point(args.point))


def cmd_pointer_daemon(session, _args):
    PointerService(session)
    GLib.MainLoop().run()  # dbus-python exits the process when the bus goes away


def cmd_monitor_mode(session, args):
    serial, monitors = display_state(session)
    if not 1 <= args.monitor <= len(monitors):
        raise Failure('no monitor %d (the session has %d)' % (args.monitor, len(monitors)))
    mon = monitors[args.monitor - 1]
    if args.transform is not None:
        mon.transform = args.transform
    elif args.scale is not None:
        if args.scale not in mon.mode.scales:
            raise Failure('%s does not offer scale %g in mode %dx%d (it offers %s)' % (
                mon.connector, args.scale, mon.mode.w, mon.mode.h,
                ', '.join('%g' % v for v in mon.mode.scales)))
        mon.scale = args.scale
    else:
        wanted = [m for m in mon.modes if '%dx%d' % (m.w, m.h) == args.mode]
        if not wanted:
            raise Failure('%s has no mode %s (it has %s)' % (
                mon.connector, args.mode, ', '.join('%dx%d' % (m.w, m.h) for m in mon.modes)))
        mon.mode = wanted[0]
    apply_layout(session, serial, sorted(monitors, key=lambda m: m.x))
    print(mon.geometry())


def cmd_screencast_run(session, args):
    """Runs the command line while mutter streams the monitor ("{node}" replaced by its node id)."""
    command = args.command_line[1:] if args.command_line[:1] == ['--'] else args.command_line
    if not command:
        raise Failure('screencast-run needs a command')
    cast, node = record_monitor(session, monitor(session, args.monitor).connector, args.cursor)
    try:
        status = subprocess.call([part.replace('{node}', str(node)) for part in command])
    finally:
        try:
            cast.Stop(dbus_interface='org.gnome.Mutter.ScreenCast.Session')
        except dbus.DBusException:
            pass   # mutter already ended it (its monitor went away)
    sys.exit(status)


COMMANDS = {
    'wait-name': cmd_wait_name,
    'name-pid': cmd_name_pid,
    'wait-backend': cmd_wait_backend,
    'wait-portal': cmd_wait_portal,
    'monitors': cmd_monitors,
    'screenshot': cmd_screenshot,
    'find-window': cmd_find_window,
    'pointer': cmd_pointer,
    'pointer-daemon': cmd_pointer_daemon,
    'consent': cmd_consent,
    'monitor-mode': cmd_monitor_mode,
    'screencast-run': cmd_screencast_run,
}


def parse_args():
    parser = argparse.ArgumentParser(prog='rig-desktop.py', description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('wait-name')
    p.add_argument('name')
    p.add_argument('--timeout', type=float, default=10)
    p = sub.add_parser('name-pid')
    p.add_argument('name')
    p = sub.add_parser('wait-backend')
    p.add_argument('--timeout', type=float, default=10)
    p = sub.add_parser('wait-portal')
    p.add_argument('--timeout', type=float, default=10)
    p = sub.add_parser('monitors')
    p.add_argument('--timeout', type=float, default=10)
    p.add_argument('--arrange', action='store_true',
                   help='first lay them out left to right in connector order')
    p = sub.add_parser('screenshot')
    p.add_argument('--monitor', type=int, default=1)
    p = sub.add_parser('find-window')
    p.add_argument('--size', required=True)
    p.add_argument('--timeout', type=float, default=10)
    p = sub.add_parser('pointer')
    p.add_argument('point')
    sub.add_parser('pointer-daemon')
    p = sub.add_parser('consent')
    p.add_argument('action', choices=['share', 'cancel'])
    p.add_argument('--monitor', type=int, default=1)
    p.add_argument('--timeout', type=float, default=20)
    p.add_argument('--save-dir')
    p = sub.add_parser('monitor-mode')
    p.add_argument('--monitor', type=int, default=1)
    change = p.add_mutually_exclusive_group(required=True)
    change.add_argument('--transform', type=int, choices=range(8))
    change.add_argument('--scale', type=float)
    change.add_argument('--mode')
    p = sub.add_parser('screencast-run')
    p.add_argument('--monitor', type=int, default=1)
    p.add_argument('--cursor', choices=sorted(CURSOR_MODES), default='embedded')
    p.add_argument('command_line', nargs=argparse.REMAINDER)
    return parser.parse_args()


def main():
    args = parse_args()
    try:
        COMMANDS[args.command](bus(), args)
    except Failure as e:
        print('rig-desktop: %s' % e, file=sys.stderr)
        sys.exit(e.exit_code)
    except dbus.DBusException as e:
        print('rig-desktop: %s: %s' % (args.command, e.get_dbus_message()), file=sys.stderr)
        sys.exit(1)
    except OSError as e:
        print('rig-desktop: %s: %s' % (args.command, e), file=sys.stderr)
        sys.exit(1)


if __name__ == '__main__':
    main()
