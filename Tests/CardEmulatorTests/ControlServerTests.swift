import CardEmulator
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The control socket serves clients concurrently and bounds what one client can cost: a silent client or an endless
/// line no longer blocks `cardemu ctl status` or grows the emulator.
@Suite struct ControlServerTests {
    /// A server on a fresh socket path; stopped by the caller.
    func server(_ make: (String, EmulatedReader) -> ControlServer = { ControlServer(path: $0, reader: $1) }) throws -> ControlServer {
        let path = NSTemporaryDirectory() + "ctl-\(UUID().uuidString.prefix(8)).sock"
        let server = make(path, EmulatedReader(kind: .acr122u))
        try server.start()
        return server
    }

    /// A raw client whose reads give up after `timeout` seconds (so a test never hangs on a server that does).
    final class RawClient {
        let fd: Int32
        init(_ path: String, timeout: Int = 3) throws {
            fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                for (i, b) in Array(path.utf8).enumerated() { raw[i] = b }
            }
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            try #require(connected == 0)
            var wait = timeval(tv_sec: timeout, tv_usec: 0)
            _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
            _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
        }
        deinit { close(fd) }

        func send(_ bytes: [UInt8]) {
            var sent = 0
            while sent < bytes.count {
                let count = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                guard count > 0 else { return }
                sent += count
            }
        }

        /// The answer line, or nil when none came in time.
        func answer() -> String? {
            var line: [UInt8] = []
            var byte: UInt8 = 0
            while true {
                let count = recv(fd, &byte, 1, 0)
                if count < 0 && errno == EINTR { continue }
                guard count == 1 else { return line.isEmpty ? nil : String(decoding: line, as: UTF8.self) }
                if byte == 0x0A { return String(decoding: line, as: UTF8.self) }
                line.append(byte)
            }
        }
    }

    /// One client connected and said nothing; `cardemu ctl status` used to wait behind it forever.
    @Test func aSilentClientDoesNotBlockAnother() throws {
        let server = try server()
        defer { server.stop() }
        let silent = try RawClient(server.path)
        let answer = try withExtendedLifetime(silent) {
            let client = try RawClient(server.path)
            client.send(Array("status\n".utf8))
            return client.answer()
        }
        #expect(answer?.hasPrefix("ok profile acr122u") == true, "\(answer ?? "no answer within 3 s")")
    }

    /// A line without end used to be read forever into memory (16 MB grew cardemu from 24 to 65 MB); now it is
    /// refused once it passes the maximum line length.
    @Test func anEndlessLineIsRefusedAndClosed() throws {
        let server = try server()
        defer { server.stop() }
        let client = try RawClient(server.path)
        client.send([UInt8](repeating: 0x41, count: 64 * 1024))
        let answer = client.answer()
        #expect(answer?.hasPrefix("error: the request is longer than 4096 bytes") == true, "\(answer ?? "no answer within 3 s")")
        #expect(client.answer() == nil, "closed after the error line")
    }

    @Test func aClientThatSendsNoLineInTimeIsAnsweredAndClosed() throws {
        let server = try server { ControlServer(path: $0, reader: $1, requestTimeout: .milliseconds(200)) }
        defer { server.stop() }
        let client = try RawClient(server.path)
        client.send(Array("stat".utf8))
        // The error line itself shows the 200 ms request timeout fired (a client left waiting gets nothing for 3 s);
        // no wall-clock bound here: under a loaded parallel run the answer once took 2.0 s to arrive.
        let answer = client.answer()
        #expect(answer?.hasPrefix("error: no complete request line within") == true, "\(answer ?? "no answer within 3 s")")
        #expect(try ControlClient.send("status", to: server.path, timeout: .seconds(3)).hasPrefix("ok "))
    }

    @Test func clientsBeyondTheMaximumAreToldSo() throws {
        let server = try server { ControlServer(path: $0, reader: $1, requestTimeout: .seconds(2), maximumClients: 2) }
        defer { server.stop() }
        let silent = try [RawClient(server.path), RawClient(server.path)]
        let answer = try withExtendedLifetime(silent) {
            for _ in 0..<100 where server.activeClients < 2 { Thread.sleep(forTimeInterval: 0.01) }
            return try RawClient(server.path).answer()
        }
        #expect(answer?.hasPrefix("error: 2 clients are connected already") == true, "\(answer ?? "no answer within 3 s")")
    }

    /// Requests from many clients at once are served, each its own answer (the reader behind them is locked).
    @Test func concurrentClientsEachGetTheirAnswer() async throws {
        let server = try server()
        defer { server.stop() }
        let path = server.path
        let answers = try await withThrowingTaskGroup(of: String.self) { group in
            for index in 0..<12 {
                group.addTask {
                    let request = index.isMultiple(of: 2) ? "status" : "latency \(index)"
                    return try ControlClient.send(request, to: path, timeout: .seconds(3))
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(answers.count == 12 && answers.allSatisfy { $0.hasPrefix("ok ") }, "\(answers)")
    }
}
