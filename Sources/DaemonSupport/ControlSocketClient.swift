import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The client side of `ControlSocketServer`: one connection, requests out, answer lines in.
///
/// The blocking calls (`connect`, `send`, `readLine`) wait with poll(2) and a timeout; call them from a synchronous
/// command-line tool or a thread of your own. Async code uses the `async` forms, which run the same calls on the
/// client's own dispatch queue, off the cooperative pool.
public final class ControlSocketClient: @unchecked Sendable {
    public let path: String
    /// The longest answer line accepted (a client must not grow without bound either).
    public let maximumLineLength: Int
    private let fd: Int32
    private var buffer: [UInt8] = []
    private var atEnd = false
    private let queue = DispatchQueue(label: "control-client")
    private let lock = NSLock()
    private var isClosed = false

    /// Connects to the daemon's socket.
    /// - Throws: `ControlSocketError` `.notRunning` (nothing listens), `.systemCall` (e.g. permission), `.pathTooLong`.
    public init(path: String, timeout: Duration = .seconds(5), maximumLineLength: Int = 16 * 1024 * 1024) throws(ControlSocketError) {
        self.path = path
        self.maximumLineLength = maximumLineLength
        fd = try UnixSocket.stream()
        // A blocking connect waits only when the server's backlog is full; bound that wait.
        var wait = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: Int(timeout.components.attoseconds / 1_000_000_000_000))
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
        do {
            try UnixSocket.connect(fd, to: path)
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    deinit { close() }

    /// Closes the connection (a server streaming events to it cancels that stream). Idempotent.
    public func close() {
        let first = lock.withLock {
            defer { isClosed = true }
            return !isClosed
        }
        if first { Glibc.close(fd) }
    }

    /// Sends one request object as a JSON line.
    public func send(_ request: some Encodable, timeout: Duration = .seconds(5)) throws(ControlSocketError) {
        let json: Data
        do {
            json = try JSONEncoder().encode(request)
        } catch {
            throw ControlSocketError(.protocolError, "the request cannot be encoded as JSON: \(error)")
        }
        try send(rawLine: String(decoding: json, as: UTF8.self), timeout: timeout)
    }

    /// Sends `line` followed by a newline, as it is (tests send garbage this way).
    public func send(rawLine line: String, timeout: Duration = .seconds(5)) throws(ControlSocketError) {
        try send(bytes: Array(line.utf8) + [0x0A], timeout: timeout)
    }

    /// Sends `bytes` as they are.
    public func send(bytes: [UInt8], timeout: Duration = .seconds(5)) throws(ControlSocketError) {
        let deadline = ContinuousClock.now + timeout
        var offset = 0
        while offset < bytes.count {
            guard let sent = UnixSocket.sendAvailable(fd, bytes[offset...]) else {
                throw UnixSocket.failure("send to \(path)", "the daemon closed the connection")
            }
            offset += sent
            if offset < bytes.count {
                guard try waitFor(Int16(POLLOUT), until: deadline) else {
                    throw ControlSocketError(.timedOut, "the daemon at \(path) took no data for \(timeout): it may be hung")
                }
            }
        }
    }

    /// Shuts down the sending direction: the server answers what it has and then closes (like `nc -N`).
    public func finishSending() { shutdown(fd, Int32(SHUT_WR)) }

    /// The next answer line (newline excluded), or nil when the server closed the connection.
    /// - Throws: `.timedOut` when no complete line arrives within `timeout`; `.protocolError` for an overlong line.
    public func readLine(timeout: Duration = .seconds(10)) throws(ControlSocketError) -> Data? {
        let deadline = ContinuousClock.now + timeout
        var searched = 0
        while true {
            if let newline = buffer[searched...].firstIndex(of: 0x0A) {
                let line = Data(buffer[0..<newline])
                buffer.removeFirst(newline + 1)
                return line
            }
            searched = buffer.count
            if atEnd {
                guard buffer.isEmpty else {
                    throw ControlSocketError(.protocolError, "the daemon at \(path) closed the connection in the middle of a line")
                }
                return nil
            }
            guard buffer.count <= maximumLineLength else {
                throw ControlSocketError(.protocolError, "an answer line from \(path) is longer than \(maximumLineLength) bytes")
            }
            guard try waitFor(Int16(POLLIN), until: deadline) else {
                throw ControlSocketError(.timedOut, "no answer from the daemon at \(path) within \(timeout): it may be hung; check `systemctl status cardd`")
            }
            var chunk = [UInt8](repeating: 0, count: 64 * 1024)
            let count = recv(fd, &chunk, chunk.count, Int32(MSG_DONTWAIT))
            if count < 0 {
                if errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK { continue }
                if errno == ECONNRESET { atEnd = true; continue }
                throw UnixSocket.failure("recv from \(path)", "the connection broke; retry")
            }
            if count == 0 { atEnd = true } else { buffer += chunk[0..<count] }
        }
    }

    /// Sends one request and collects its answer lines until the server closes the connection or `until` says the
    /// answer is complete (e.g. after one line for a one-line command).
    public func request(_ request: some Encodable, timeout: Duration = .seconds(10),
                        until complete: (Data) -> Bool = { _ in true }) throws(ControlSocketError) -> [Data] {
        try send(request, timeout: timeout)
        var lines: [Data] = []
        while let line = try readLine(timeout: timeout) {
            lines.append(line)
            if complete(line) { break }
        }
        return lines
    }

    private func waitFor(_ events: Int16, until deadline: ContinuousClock.Instant) throws(ControlSocketError) -> Bool {
        var fds = [pollfd(fd: fd, events: events, revents: 0)]
        let ready = UnixSocket.poll(&fds, timeout: deadline - .now)
        guard ready >= 0 else { throw UnixSocket.failure("poll", "retry") }
        return ready > 0
    }

    // MARK: async forms, on the client's queue

    /// `send(_:timeout:)` off the cooperative pool.
    public func send(_ request: some Encodable & Sendable, timeout: Duration = .seconds(5)) async throws(ControlSocketError) {
        try await onQueue { () throws(ControlSocketError) in try self.send(request, timeout: timeout) }
    }

    /// `send(rawLine:timeout:)` off the cooperative pool.
    public func send(rawLine line: String, timeout: Duration = .seconds(5)) async throws(ControlSocketError) {
        try await onQueue { () throws(ControlSocketError) in try self.send(rawLine: line, timeout: timeout) }
    }

    /// `readLine(timeout:)` off the cooperative pool.
    public func nextLine(timeout: Duration = .seconds(10)) async throws(ControlSocketError) -> Data? {
        try await onQueue { () throws(ControlSocketError) in try self.readLine(timeout: timeout) }
    }

    /// `init(path:timeout:)` off the cooperative pool.
    public static func connect(path: String, timeout: Duration = .seconds(5)) async throws(ControlSocketError) -> ControlSocketClient {
        let result: Result<ControlSocketClient, ControlSocketError> = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                do throws(ControlSocketError) {
                    continuation.resume(returning: .success(try ControlSocketClient(path: path, timeout: timeout)))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }

    private func onQueue<T: Sendable>(_ body: @escaping @Sendable () throws(ControlSocketError) -> T) async throws(ControlSocketError) -> T {
        let result: Result<T, ControlSocketError> = await withCheckedContinuation { continuation in
            queue.async {
                do throws(ControlSocketError) {
                    continuation.resume(returning: .success(try body()))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }
}
