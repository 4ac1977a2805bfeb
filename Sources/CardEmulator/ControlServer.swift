import Foundation
import MifareClassic
#if canImport(Glibc)
import Glibc
#endif

/// The emulator's control socket: a Unix stream socket taking one request line and answering one line,
/// "ok ..." or "error: what, why, what to do".
///
/// Requests: `insert [FILE]` (no FILE: put back the last removed card, memory kept), `remove`, `tear-after N`,
/// `tear-during N [--effect old|garbled|executed|not-executed]`, `latency MS`, `unresponsive on|off`,
/// `status [--json]`.
///
/// Clients are served concurrently, each on its own thread (at most `maximumClients`; more are answered "busy"), so a
/// silent client never holds up another. A request line longer than `maximumLineLength`, or not complete within
/// `requestTimeout` of connecting, is answered with an error line and the connection closed: a client can neither
/// grow the emulator's memory nor keep a thread.
public final class ControlServer: @unchecked Sendable {
    public let path: String
    let reader: EmulatedReader
    /// Called after a card image changed (for `--save`).
    let onInsert: @Sendable (EmulatedCard, String?) -> Void
    /// The longest request line served, newline excluded.
    public let maximumLineLength: Int
    /// How long a client has, from connecting, to send its request line.
    public let requestTimeout: Duration
    /// How many clients are served at once.
    public let maximumClients: Int
    private var fd: Int32 = -1
    private var thread: Thread?
    private let lock = NSLock()
    private var clients = 0

    public init(path: String, reader: EmulatedReader, maximumLineLength: Int = 4096, requestTimeout: Duration = .seconds(5),
                maximumClients: Int = 16, onInsert: @escaping @Sendable (EmulatedCard, String?) -> Void = { _, _ in }) {
        self.path = path
        self.reader = reader
        self.maximumLineLength = maximumLineLength
        self.requestTimeout = requestTimeout
        self.maximumClients = maximumClients
        self.onInsert = onInsert
    }

    /// Binds the socket (replacing a stale one) and accepts clients on its own thread.
    public func start() throws {
        unlink(path)
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw ControlError("control socket path \(path) is too long (max 107 bytes): choose a shorter --control")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, listen(fd, 8) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw ControlError("cannot open the control socket \(path): \(reason); check the directory exists and is writable")
        }
        let listener = fd
        let thread = Thread { [self] in accept(on: listener) }
        thread.name = "cardemu-control"
        self.thread = thread
        thread.start()
    }

    /// Closes the socket and removes its file. Clients being served finish within `requestTimeout`.
    public func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
        unlink(path)
    }

    /// The number of clients being served now.
    public var activeClients: Int { lock.withLock { clients } }

    private func accept(on listener: Int32) {
        while true {
            let client = Glibc.accept(listener, nil, nil)
            if client < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                return
            }
            let admitted = lock.withLock {
                guard clients < maximumClients else { return false }
                clients += 1
                return true
            }
            guard admitted else {
                reply(client, "error: \(maximumClients) clients are connected already: retry when one has finished")
                close(client)
                continue
            }
            let thread = Thread { [self] in
                serve(client)
                close(client)
                lock.withLock { clients -= 1 }
            }
            thread.name = "cardemu-control-client"
            thread.start()
        }
    }

    /// Reads one request line within the limits, answers it, and returns (the caller closes).
    private func serve(_ client: Int32) {
        let milliseconds = Int(requestTimeout.components.seconds) * 1000 + Int(requestTimeout.components.attoseconds / 1_000_000_000_000_000)
        var timeout = timeval(tv_sec: milliseconds / 1000, tv_usec: (milliseconds % 1000) * 1000)
        _ = setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let deadline = ContinuousClock.now + requestTimeout
        var request: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 512)
        while true {
            let left = ContinuousClock.now.duration(to: deadline)
            let wait = max(0, Int(left.components.seconds) * 1000 + Int(left.components.attoseconds / 1_000_000_000_000_000))
            var poller = pollfd(fd: client, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, Int32(clamping: wait))
            if ready < 0 && errno == EINTR { continue }
            guard ready > 0 else {
                reply(client, "error: no complete request line within \(requestTimeout): send one command line ending in a newline, e.g. `status`")
                return
            }
            let count = recv(client, &chunk, min(chunk.count, maximumLineLength + 1 - request.count), 0)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }  // the client closed: serve what it sent
            if let newline = chunk[0..<count].firstIndex(of: 0x0A) {
                request += chunk[0..<newline]
                break
            }
            request += chunk[0..<count]
            guard request.count <= maximumLineLength else {
                reply(client, "error: the request is longer than \(maximumLineLength) bytes: send one command line, e.g. `status`")
                return
            }
        }
        reply(client, handle(String(decoding: request, as: UTF8.self)))
    }

    /// Sends one answer line (best effort: the client may be gone).
    private func reply(_ client: Int32, _ line: String) {
        let bytes = Array((line + "\n").utf8)
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes { Glibc.send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return }
            sent += count
        }
    }

    /// Executes one request line and returns the answer line.
    public func handle(_ line: String) -> String {
        let words = line.split(separator: " ").map(String.init)
        guard let command = words.first else { return "error: empty request: send a command such as `status`" }
        let arguments = Array(words.dropFirst())
        switch command {
        case "insert":
            if let file = arguments.first {
                guard let data = FileManager.default.contents(atPath: file) else {
                    return "error: cannot read \(file): no such file or not readable; give a 1024/4096-byte dump"
                }
                do {
                    let card = try EmulatedCard(image: Array(data), magic: arguments.contains("--magic"))
                    reader.insert(card)
                    onInsert(card, file)
                    return "ok inserted \(file) uid \(hex(card.uid))"
                } catch {
                    return "error: \(error)"
                }
            }
            guard reader.currentCard == nil else { return "error: a card is already in the field: `remove` it first" }
            guard reader.reinsert() else { return "error: no card was removed before: give a FILE to insert" }
            return "ok re-inserted uid \(hex(reader.currentCard?.uid ?? []))"
        case "remove":
            guard let card = reader.remove() else { return "error: no card in the field" }
            return "ok removed uid \(hex(card.uid))"
        case "tear-after":
            guard let count = arguments.first.flatMap(Int.init), count >= 0 else {
                return "error: tear-after needs a count N >= 0: the card leaves during APDU N+1"
            }
            reader.arm(.after(count))
            return "ok the card leaves after \(count) more APDU(s)"
        case "tear-during":
            guard let index = arguments.first.flatMap(Int.init), index >= 1 else {
                return "error: tear-during needs an APDU index N >= 1 (counted from now)"
            }
            var effect = TearEffect.leftOld
            if let flag = arguments.firstIndex(of: "--effect") {
                guard flag + 1 < arguments.count, let parsed = TearEffect(rawValue: arguments[flag + 1]) else {
                    return "error: --effect must be one of \(TearEffect.allCases.map(\.rawValue).joined(separator: ", "))"
                }
                effect = parsed
            }
            reader.arm(TearPlan(atAPDU: index, effect: effect))
            return "ok APDU \(index) from now is torn (\(effect.rawValue))"
        case "latency":
            guard let ms = arguments.first.flatMap(Int.init), (0...10_000).contains(ms) else {
                return "error: latency needs milliseconds 0...10000"
            }
            reader.latency = ms
            return "ok latency \(ms) ms per APDU"
        case "unresponsive":
            guard let state = arguments.first, state == "on" || state == "off" else { return "error: unresponsive on|off" }
            reader.unresponsive = state == "on"
            return "ok unresponsive \(state)"
        case "status":
            let status = status()
            if arguments.contains("--json") {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                return "ok " + String(decoding: (try? encoder.encode(status)) ?? Data(), as: UTF8.self)
            }
            return "ok " + status.line
        default:
            return "error: unknown command \(command): use insert, remove, tear-after, tear-during, latency, unresponsive or status"
        }
    }

    public struct Status: Codable, Sendable {
        public var profile: String
        public var cardPresent: Bool
        public var uid: String?
        public var apdus: Int
        public var blockWrites: Int
        public var armedTear: String?
        public var latencyMilliseconds: Int
        public var unresponsive: Bool

        var line: String {
            "profile \(profile) card \(cardPresent ? "present uid \(uid ?? "")" : "absent") apdus \(apdus) writes \(blockWrites) "
                + "tear \(armedTear ?? "none") latency \(latencyMilliseconds) unresponsive \(unresponsive ? "on" : "off")"
        }
    }

    public func status() -> Status {
        let stats = reader.statistics
        let card = reader.currentCard
        return Status(profile: reader.kind.rawValue, cardPresent: card != nil, uid: card.map { hex($0.uid) },
                      apdus: stats.apdus, blockWrites: stats.blockWrites,
                      armedTear: reader.armedPlan.map { "APDU \($0.atAPDU) \($0.effect.rawValue)" },
                      latencyMilliseconds: reader.latency, unresponsive: reader.unresponsive)
    }

    private func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02X", $0) }.joined() }
}

/// A control-socket failure with its one-line message.
public struct ControlError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The client side: sends one request line and returns the answer line.
public enum ControlClient {
    /// `timeout`: how long to wait for the answer (an emulator that hangs is reported, not waited on forever).
    public static func send(_ request: String, to path: String, timeout: Duration = .seconds(10)) throws -> String {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw ControlError("control socket path too long: \(path)") }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else {
            throw ControlError("cannot reach the emulator at \(path): \(String(cString: strerror(errno))); is `cardemu --control \(path)` running?")
        }
        var wait = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: Int(timeout.components.attoseconds / 1_000_000_000_000))
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
        let line = request + "\n"
        _ = line.withCString { Glibc.send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
        var answer: [UInt8] = []
        var byte: UInt8 = 0
        while true {
            let count = recv(fd, &byte, 1, 0)
            if count < 0 && errno == EINTR { continue }
            if count < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                throw ControlError("the emulator at \(path) did not answer within \(timeout): it may be hung; restart `cardemu`")
            }
            guard count == 1, byte != 0x0A else { break }
            answer.append(byte)
        }
        return String(decoding: answer, as: UTF8.self)
    }
}
