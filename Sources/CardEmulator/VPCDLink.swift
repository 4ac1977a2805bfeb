import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Presents an `EmulatedReader`'s card to pcscd through the vpcd driver (Debian `vsmartcard-vpcd`).
///
/// vpcd listens on TCP 35963 ("Virtual PCD 00 00") and 35964 ("Virtual PCD 00 01"); the card is a TCP client:
/// connected = card in the field, closed = card removed. Frames both ways are a 2-byte big-endian length and the
/// payload; 1-byte payloads are control (00 power off, 01 power on, 02 reset, 04 get ATR), longer ones APDUs.
/// TCP_NODELAY and TCP_QUICKACK (re-armed before every read) and one `send` per frame keep an APDU at ~0.1 ms
/// instead of ~40 ms of delayed-ACK stalls. Runs on its own thread: the sockets block.
public final class VPCDLink: @unchecked Sendable {
    public let reader: EmulatedReader
    public let host: String
    public let port: UInt16

    private let lock = NSLock()
    private let wake = DispatchSemaphore(value: 0)
    private var running = false
    private var socket: Int32 = -1
    private var thread: Thread?
    private let stopped = DispatchSemaphore(value: 0)
    private var connections = 0
    /// CARDEMU_TRACE=1 prints each frame from vpcd on stderr (never the APDU bytes: they can carry keys).
    private let trace = ProcessInfo.processInfo.environment["CARDEMU_TRACE"] != nil

    /// The name pcscd gives the vpcd reader on `port`: "Virtual PCD 00 00" for 35963, "Virtual PCD 00 01" for 35964.
    public static func readerName(port: UInt16) -> String {
        "Virtual PCD 00 " + String(format: "%02d", Int(port) - 35963)
    }

    public init(reader: EmulatedReader, host: String = "127.0.0.1", port: UInt16 = 35963) {
        self.reader = reader
        self.host = host
        self.port = port
    }

    /// Starts presenting: connects whenever a card is in the field (retrying until vpcd listens).
    public func start() {
        lock.withLock { running = true }
        reader.observePresence { [weak self] _ in self?.nudge() }
        let thread = Thread { [self] in loop() }
        thread.name = "vpcd-\(port)"
        self.thread = thread
        thread.start()
    }

    /// Stops and closes the connection (pcscd sees the card removed). Returns when the thread has ended.
    public func stop() {
        let wasRunning = lock.withLock {
            defer { running = false }
            return running
        }
        guard wasRunning else { return }
        nudge()
        stopped.wait()
    }

    /// Whether the card side is connected to vpcd now.
    public var isConnected: Bool { lock.withLock { socket >= 0 } }

    /// How many times the link connected (each is a card insertion for pcscd).
    public var connectionCount: Int { lock.withLock { connections } }

    /// Waits until connected (true) or `timeout` passes (false).
    public func waitUntilConnected(timeout: Duration = .seconds(5)) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if isConnected { return true }
            Thread.sleep(forTimeInterval: 0.01)
        }
        return isConnected
    }

    /// Wakes the thread: presence changed or stop requested. Shutting the socket down unblocks a pending read.
    private func nudge() {
        lock.withLock {
            if socket >= 0 && (reader.currentCard == nil || !running) { shutdown(socket, Int32(SHUT_RDWR)) }
        }
        wake.signal()
    }

    private var isRunning: Bool { lock.withLock { running } }

    private func loop() {
        var backoff = 0.02
        while isRunning {
            guard reader.currentCard != nil else {
                _ = wake.wait(timeout: .now() + 0.2)
                continue
            }
            guard let fd = connect() else {
                // vpcd not listening (pcscd stopped or restarting): try again shortly.
                _ = wake.wait(timeout: .now() + backoff)
                backoff = min(backoff * 2, 0.5)
                continue
            }
            backoff = 0.02
            lock.withLock {
                socket = fd
                connections += 1
            }
            serve(fd)
            lock.withLock { socket = -1 }
            close(fd)
        }
        stopped.signal()
    }

    private func connect() -> Int32? {
        let fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        inet_pton(AF_INET, host, &address.sin_addr)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            close(fd)
            return nil
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        return fd
    }

    /// Answers frames until the card leaves, the peer closes, or stop.
    private func serve(_ fd: Int32) {
        while isRunning && reader.currentCard != nil {
            guard let payload = readFrame(fd) else { return }
            if trace { FileHandle.standardError.write(Data("vpcd \(port): \(payload.count == 1 ? "control \(payload[0])" : "APDU of \(payload.count) bytes")\n".utf8)) }
            if payload.count == 1 {
                switch payload[0] {
                case 0x00, 0x01, 0x02:
                    reader.resetCard()  // power off/on or reset: the card forgets its authentication
                case 0x04:
                    guard let atr = reader.atr, send(fd, atr) else { return }
                default:
                    return
                }
                continue
            }
            switch reader.handle(payload) {
            case .response(let bytes):
                let latency = reader.latency
                if latency > 0 { Thread.sleep(forTimeInterval: Double(latency) / 1000) }
                guard send(fd, bytes) else { return }
            case .cardRemoved:
                return  // close without answering: pcscd sees the card gone mid-APDU
            case .silent:
                continue  // a reader that stopped answering
            }
        }
    }

    private func readFrame(_ fd: Int32) -> [UInt8]? {
        guard let header = readExactly(fd, 2) else { return nil }
        let length = Int(header[0]) << 8 | Int(header[1])
        guard length > 0 else { return nil }
        return readExactly(fd, length)
    }

    private func readExactly(_ fd: Int32, _ count: Int) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: count)
        var received = 0
        while received < count {
            // Linux clears QUICKACK after use: re-arm it before each read so our ACKs are never delayed.
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_QUICKACK, &one, socklen_t(MemoryLayout<Int32>.size))
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + received, count - received, 0) }
            if n <= 0 {
                if n < 0 && errno == EINTR { continue }
                return nil
            }
            received += n
        }
        return buffer
    }

    /// Sends one frame (length + payload) in a single write.
    private func send(_ fd: Int32, _ payload: [UInt8]) -> Bool {
        let frame = [UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)] + payload
        let sent = frame.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, frame.count, Int32(MSG_NOSIGNAL)) }
        return sent == frame.count
    }
}
