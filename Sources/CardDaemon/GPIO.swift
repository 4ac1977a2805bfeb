import Foundation
#if os(Linux)
import CGPIO
import Glibc
#endif

/// A GPIO character-device failure: a code, the C call that failed and its errno, and one line (what, why, what to do).
public struct GPIOError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable {
        /// ENOENT: no such chip (wrong path, GPIO support missing, the device tree lacks it).
        case chipMissing = "chip-missing"
        /// EACCES/EPERM: the daemon's user may not open the chip (a udev rule gives its group access).
        case permissionDenied = "permission-denied"
        /// EBUSY: another process (or a kernel driver) holds the line.
        case lineBusy = "line-busy"
        /// ENOTTY/EINVAL on the line request: the path is not a GPIO chip, or the kernel lacks uAPI v2 or the flags.
        case notAChip = "not-a-gpio-chip"
        case ioctlFailed = "ioctl-failed"
        case readFailed = "read-failed"
        /// Not Linux: there is no GPIO character device.
        case unsupported
    }
    public var code: Code
    /// The C function that failed ("open", "ioctl(GPIO_V2_GET_LINE_IOCTL)", "read").
    public var call: String
    public var errno: Int32?
    public var message: String
    public init(_ code: Code, call: String, errno: Int32?, _ message: String) {
        self.code = code
        self.call = call
        self.errno = errno
        self.message = message
    }
    public var description: String { message }
}

extension GPIOError.Code {
    /// `catch GPIOError.Code.chipMissing` matches a `GPIOError` with that code.
    public static func ~= (code: Self, error: any Error) -> Bool { (error as? GPIOError)?.code == code }
}

/// Counts the meter's pulses from uAPI v2 edge events: one per rising edge, plus the events the kernel dropped when
/// its buffer overflowed, which show as a gap in `line_seqno` (the overflow drops the oldest events).
public struct PulseCounter: Sendable, Hashable {
    /// The last line sequence number seen (the kernel numbers a line's events from 1).
    public private(set) var lastSequence: UInt32 = 0
    public private(set) var dropped = 0
    public init() {}

    /// The pulses an event stands for: 1, plus any events lost before it.
    public mutating func count(edgeID: UInt32, lineSequence: UInt32) -> Int {
        let gap = lastSequence == 0 ? 0 : Int(lineSequence &- lastSequence &- 1)
        lastSequence = lineSequence
        let lost = gap > 0 && gap < 1 << 20 ? gap : 0  // a wrapped or reset counter is not a loss
        dropped += lost
        return (edgeID == Self.risingEdge ? 1 : 0) + lost
    }

    /// GPIO_V2_LINE_EVENT_RISING_EDGE.
    public static let risingEdge: UInt32 = 1
}

#if os(Linux)
/// The one place GPIO syscalls go through: retries EINTR, classifies the errno into a `GPIOError`.
func gpioCall(_ call: String, path: String, _ body: () -> Int32) throws(GPIOError) -> Int32 {
    while true {
        let result = body()
        if result >= 0 { return result }
        let error = Glibc.errno
        if error == EINTR { continue }
        let reason = String(cString: strerror(error))
        switch error {
        case ENOENT, ENODEV, ENXIO:
            throw GPIOError(.chipMissing, call: call, errno: error, "\(path): no such GPIO chip (\(reason)): check water.gpio.chip (`ls /dev/gpiochip*`, `gpiodetect`)")
        case EACCES, EPERM:
            throw GPIOError(.permissionDenied, call: call, errno: error, "\(path): permission denied: give the daemon's group access with a udev rule (docs/cardd-config.md)")
        case EBUSY:
            throw GPIOError(.lineBusy, call: call, errno: error, "\(path): the line is in use by another process or a kernel driver (`gpioinfo` shows the consumer)")
        case ENOTTY, EINVAL:
            throw GPIOError(.notAChip, call: call, errno: error, "\(path): \(call) was refused (\(reason)): not a GPIO chip, a line offset out of range, or a kernel without GPIO uAPI v2 (Linux 5.10+)")
        default:
            throw GPIOError(.ioctlFailed, call: call, errno: error, "\(path): \(call) failed (\(reason))")
        }
    }
}

/// A granted line request: the fd the kernel returned (the line's state holds while it is open).
final class GPIOLineRequest: @unchecked Sendable {
    let fd: Int32
    let path: String

    /// Opens `path`, asks for the line described by `fill`, closes the chip (the request fd stands alone).
    init(path: String, fill: (UnsafeMutablePointer<gpio_v2_line_request>) -> Void) throws(GPIOError) {
        self.path = path
        let chip = try gpioCall("open", path: path) { open(path, O_RDWR | O_CLOEXEC) }
        defer { close(chip) }
        var request = gpio_v2_line_request()
        fill(&request)
        _ = try gpioCall("ioctl(GPIO_V2_GET_LINE_IOCTL)", path: path) {
            withUnsafeMutablePointer(to: &request) { ioctl(chip, onecard_gpio_v2_get_line_ioctl(), $0) }
        }
        fd = request.fd
    }

    /// Takes over an open fd that delivers line events (a test's pipe).
    init(adopting fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    deinit { close(fd) }
}

/// The valve relay on a GPIO line (uAPI v2). Requested as an output driven inactive (closed) from the moment the
/// kernel grants it; `activeLow` for relay boards switched by a low level. When the process exits the kernel may return
/// the line to its default: wire the relay so that an unpowered coil keeps the NC valve closed (HardwareNotes.md).
public final class GPIOValve: Valve, @unchecked Sendable {
    private let request: GPIOLineRequest
    private let lock = NSLock()
    private var level = false
    /// A line on an I2C/SPI expander can sleep in the ioctl: valve writes run on this queue, off the cooperative pool.
    private let queue = DispatchQueue(label: "cardd.gpio.valve")

    public init(chip: String, line: UInt32, activeLow: Bool, consumer: String = "cardd-valve") throws(GPIOError) {
        request = try GPIOLineRequest(path: chip) { onecard_gpio_request_output($0, line, consumer, activeLow ? 1 : 0, 0) }
    }

    public func set(open: Bool) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            queue.async {
                do { try self.write(open); continuation.resume() } catch { continuation.resume(throwing: error) }
            }
        }
    }

    public func closeNow() throws { try write(false) }

    public var isOpen: Bool { lock.withLock { level } }

    private func write(_ open: Bool) throws(GPIOError) {
        lock.lock()
        defer { lock.unlock() }
        var values = gpio_v2_line_values(bits: open ? 1 : 0, mask: 1)
        _ = try gpioCall("ioctl(GPIO_V2_LINE_SET_VALUES_IOCTL)", path: request.path) {
            withUnsafeMutablePointer(to: &values) { ioctl(request.fd, onecard_gpio_v2_line_set_values_ioctl(), $0) }
        }
        level = open
    }

    deinit { try? write(false) }
}

/// The flow meter on a GPIO line: rising-edge events read on a thread of its own (blocking `poll`/`read`, never on
/// the cooperative pool), counted with `PulseCounter`, collected by `takePulses()`. Releasing it stops the thread.
public final class GPIOFlowMeter: FlowMeter, @unchecked Sendable {
    private let loop: EventLoop

    /// `debounceMicroseconds`: 0 for none; a YF-S201 at full flow (225 Hz) holds a level ≥ 1.8 ms, so keep it below.
    public convenience init(chip: String, line: UInt32, activeLow: Bool, pullUp: Bool, debounceMicroseconds: UInt32,
                            consumer: String = "cardd-meter") throws(GPIOError) {
        try self.init(request: GPIOLineRequest(path: chip) {
            onecard_gpio_request_edges($0, line, consumer, activeLow ? 1 : 0, pullUp ? 1 : 0, debounceMicroseconds, 64)
        })
    }

    /// Reads events from `request` (tests hand in a pipe that carries `gpio_v2_line_event`s: no GPIO chip here).
    init(request: GPIOLineRequest) throws(GPIOError) {
        var fds: [Int32] = [0, 0]
        _ = try gpioCall("pipe", path: request.path) { pipe(&fds) }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }  // pipe2 is not imported (glibc declares it under _GNU_SOURCE)
        loop = EventLoop(request: request, wake: (fds[0], fds[1]))
        // The thread holds the loop, not the meter, so that releasing the meter stops it (deinit).
        let thread = Thread { [loop] in loop.run() }
        thread.name = "cardd.gpio.meter"
        thread.start()
    }

    public func takePulses() throws -> Int { try loop.take() }

    /// The events the kernel dropped so far (buffer overflow), already counted as pulses.
    public var droppedEvents: Int { loop.lock.withLock { loop.counter.dropped } }

    deinit { loop.stop() }

    /// The reading thread's state, shared with `takePulses()` under `lock`.
    final class EventLoop: @unchecked Sendable {
        let request: GPIOLineRequest
        let wake: (read: Int32, write: Int32)
        let lock = NSLock()
        var counter = PulseCounter()
        var pending = 0
        var failure: GPIOError?
        let finished = DispatchSemaphore(value: 0)

        init(request: GPIOLineRequest, wake: (read: Int32, write: Int32)) {
            self.request = request
            self.wake = wake
        }

        func take() throws -> Int {
            try lock.withLock {
                if let failure { throw failure }
                defer { pending = 0 }
                return pending
            }
        }

        func run() {
            defer { finished.signal() }
            let size = MemoryLayout<gpio_v2_line_event>.stride
            var events = [gpio_v2_line_event](repeating: gpio_v2_line_event(), count: 16)
            while true {
                var fds = [pollfd(fd: request.fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wake.read, events: Int16(POLLIN), revents: 0)]
                let ready = poll(&fds, 2, -1)
                if ready < 0 && errno == EINTR { continue }
                if ready < 0 || fds[1].revents != 0 { return }
                let count = events.withUnsafeMutableBytes { read(request.fd, $0.baseAddress, $0.count) }
                if count < 0 {
                    if errno == EINTR || errno == EAGAIN { continue }
                    let error = errno
                    lock.withLock {
                        failure = GPIOError(.readFailed, call: "read", errno: error, "\(request.path): reading the flow meter's events failed (\(String(cString: strerror(error)))): the meter is not counted any more")
                    }
                    return
                }
                lock.withLock {
                    for event in events.prefix(count / size) {
                        pending += counter.count(edgeID: event.id, lineSequence: event.line_seqno)
                    }
                }
            }
        }

        /// Wakes the thread and waits for it to end.
        func stop() {
            var byte: UInt8 = 1
            _ = write(wake.write, &byte, 1)
            finished.wait()
            close(wake.read)
            close(wake.write)
        }
    }
}
#else
/// Not Linux: no GPIO character device.
public final class GPIOValve: Valve, @unchecked Sendable {
    public init(chip: String, line: UInt32, activeLow: Bool, consumer: String = "cardd-valve") throws(GPIOError) {
        throw GPIOError(.unsupported, call: "open", errno: nil, "GPIO character devices exist on Linux only: use water.backend simulated")
    }
    public func set(open: Bool) async throws {}
    public func closeNow() throws {}
    public var isOpen: Bool { false }
}

public final class GPIOFlowMeter: FlowMeter, @unchecked Sendable {
    public init(chip: String, line: UInt32, activeLow: Bool, pullUp: Bool, debounceMicroseconds: UInt32,
                consumer: String = "cardd-meter") throws(GPIOError) {
        throw GPIOError(.unsupported, call: "open", errno: nil, "GPIO character devices exist on Linux only: use water.backend simulated")
    }
    public func takePulses() throws -> Int { 0 }
}
#endif
