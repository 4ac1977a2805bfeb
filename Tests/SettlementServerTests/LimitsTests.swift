import Foundation
import SettlementCore
import SettlementServer
import TestSupport
import Testing

/// A plain TCP connection to the test server, written and read by hand: the tests below need requests no HTTP client
/// sends (headers without their body, connections that say nothing).
final class RawConnection: @unchecked Sendable {
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestSetupError("socket: \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected else {
            close(fd)
            throw TestSetupError("connect to 127.0.0.1:\(port): \(errno)")
        }
    }

    deinit { close(fd) }

    /// Ends the connection both ways (the server sees it go).
    func end() { shutdown(fd, Int32(SHUT_RDWR)) }

    func send(_ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// What the server sends until it closes the connection, `seconds` pass or `enough` says so (on a thread of its own).
    func read(for seconds: Double, until enough: @escaping @Sendable (String) -> Bool = { _ in false }) async throws -> (text: String, closed: Bool) {
        let fd = fd
        return try await onThread {
            var received: [UInt8] = []
            let deadline = Date().addingTimeInterval(seconds)
            var buffer = [UInt8](repeating: 0, count: 4096)
            while Date() < deadline {
                var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&poller, 1, 100) > 0 else { continue }
                let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if count <= 0 { return (String(decoding: received, as: UTF8.self), true) }
                received += buffer[0..<count]
                if enough(String(decoding: received, as: UTF8.self)) { return (String(decoding: received, as: UTF8.self), false) }
            }
            return (String(decoding: received, as: UTF8.self), false)
        }
    }
}

/// settlementd's limits: connections, idle time, and the bodies it holds, held against callers that do not sign.
@Suite struct LimitsTests {
    /// The head of a request signed by the admin key over `body` (which is not sent with it).
    func signedHead(_ method: String, _ path: String, body: [UInt8], key: RequestSigning.Key = .admin(adminName),
                    secret: [UInt8] = adminSecret, now: Date = Date()) -> String {
        let headers = RequestSigning.headers(key: key, secret: secret, method: method, pathAndQuery: path, body: body, now: now)
        return "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: \(body.count)\r\nContent-Type: application/json\r\n"
            + headers.map { "\($0.0): \($0.1)\r\n" }.joined() + "\r\n"
    }

    @Test func aConnectionOverTheCapIsClosedAndOneUnderItIsServed() async throws {
        try await withServer(limits: ServerLimits(maxConnections: 3)) { server in
            let ask = "GET /v1/time HTTP/1.1\r\nHost: x\r\n\r\n"
            // Three connections, each answered once (so the server has taken all three), kept open.
            var held: [RawConnection] = []
            for _ in 0..<3 {
                let connection = try RawConnection(port: server.port)
                connection.send(ask)
                #expect(try await connection.read(for: 30) { $0.contains("unixTime") }.text.hasPrefix("HTTP/1.1 200"))
                held.append(connection)
            }
            let over = try RawConnection(port: server.port)
            over.send(ask)
            let refused = try await over.read(for: 30)
            #expect(refused.closed && refused.text.isEmpty, "\(refused)")
            // One of the three goes: a new connection is served once the server has seen it go.
            held.removeFirst().end()
            var served = false
            for _ in 0..<100 where !served {
                let connection = try RawConnection(port: server.port)
                connection.send(ask)
                served = try await connection.read(for: 5) { $0.contains("unixTime") }.text.hasPrefix("HTTP/1.1 200")
                if !served { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(served)
            withExtendedLifetime(held) {}
        }
    }

    @Test func aConnectionThatSaysNothingIsClosedAfterTheIdleTimeout() async throws {
        try await withServer(limits: ServerLimits(idleTimeout: .seconds(1))) { server in
            let silent = try RawConnection(port: server.port)
            let answer = try await silent.read(for: 10)
            #expect(answer.closed && answer.text.isEmpty, "\(answer)")
            // A connection that asked and was answered is closed after the same idle time.
            let asked = try RawConnection(port: server.port)
            asked.send("GET /v1/time HTTP/1.1\r\nHost: x\r\n\r\n")
            let served = try await asked.read(for: 10)
            #expect(served.closed && served.text.hasPrefix("HTTP/1.1 200"), "\(served)")
        }
    }

    @Test func aRequestThatCannotBeValidIsRefusedBeforeItsBodyIsRead() async throws {
        try await withServer { server in
            let body = Array(repeating: UInt8(ascii: "x"), count: SettlementLimits.maxBodyBytes)
            // Headers that announce 2 MiB and never send them: refused at once, not waited for.
            let cases: [(String, String)] = [
                ("unknown terminal", signedHead("POST", "/v1/transactions", body: body, key: .terminal(999), secret: terminalSecret)),
                ("unknown admin", signedHead("POST", "/v1/admin/accounts", body: body, key: .admin("nobody"))),
                ("no signature", "POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.count)\r\n\r\n"),
                ("stale", signedHead("POST", "/v1/admin/accounts", body: body, now: Date().addingTimeInterval(-3600))),
            ]
            for (name, head) in cases {
                let connection = try RawConnection(port: server.port)
                connection.send(head)
                let answer = try await connection.read(for: 5) { $0.contains("\r\n\r\n") }
                #expect(answer.text.hasPrefix("HTTP/1.1 401"), "\(name): \(answer.text.prefix(200))")
            }
        }
    }

    /// A signed request that holds 2 MiB of the budget while its body trickles in, and the answer to an account
    /// asked for once the server has read its head (asked until then: a loaded machine may take a while to read it).
    /// A holder answered itself (its head arrived while an asked request held its own small share, which the test
    /// budgets leave no room for, or its body's deadline passed) is sent again.
    func holdTheBudget(_ server: TestServer) async throws -> (holder: RawConnection, busy: Reply) {
        let big = Array(repeating: UInt8(ascii: " "), count: SettlementLimits.maxBodyBytes)
        func hold() throws -> RawConnection {
            let holder = try RawConnection(port: server.port)
            holder.send(signedHead("POST", "/v1/admin/accounts", body: big))
            holder.send("  ")
            return holder
        }
        var holder = try hold()
        let deadline = Date().addingTimeInterval(120)
        while true {
            let asked = try await server.admin(.POST, "/v1/admin/accounts", json: ["name": "Wei", "initialBalance": 100])
            if asked.status == 503 || Date() > deadline { return (holder, asked) }
            #expect(asked.status == 201, "\(asked.status) \(asked.message)")
            let heard = try await holder.read(for: 0.1)
            if heard.closed || !heard.text.isEmpty { holder = try hold() }
        }
    }

    @Test func bodiesOverTheBudgetAreRefusedBusyUntilItFrees() async throws {
        try await withServer(limits: ServerLimits(bodyBudget: SettlementLimits.maxBodyBytes + 10)) { server in
            let (holder, busy) = try await holdTheBudget(server)
            #expect(busy.status == 503 && busy.code == "busy" && busy.message.contains("retry"), "\(busy.status) \(busy.message)")
            // Its connection goes: the budget is free again.
            holder.end()
            var served = busy
            for _ in 0..<100 where served.status == 503 {
                try await Task.sleep(for: .milliseconds(100))
                served = try await server.admin(.POST, "/v1/admin/accounts", json: ["name": "Wei", "initialBalance": 100])
            }
            #expect(served.status == 201, "\(served.status) \(served.message)")
        }
    }

    @Test func oneCallerTakesOnlyItsShareOfTheBudget() async throws {
        try await withServer(limits: ServerLimits(bodyBudgetPerCaller: SettlementLimits.maxBodyBytes + 10)) { server in
            let (holder, busy) = try await holdTheBudget(server)
            #expect(busy.status == 503 && busy.message.contains("admin:office"), "\(busy.status) \(busy.message)")
            // Another caller is served meanwhile.
            let upload = try await server.terminal(.POST, "/v1/transactions", json: ["records": [record(sequence: 1)]])
            #expect(upload.status == 200, "\(upload.status) \(upload.message)")
            withExtendedLifetime(holder) {}
        }
    }

    @Test func aBodyThatDoesNotArriveInTimeIsRefusedAndItsShareGivenBack() async throws {
        try await withServer(limits: ServerLimits(bodyBudgetPerCaller: SettlementLimits.maxBodyBytes + 10, bodyDeadline: .seconds(1))) { server in
            let big = Array(repeating: UInt8(ascii: " "), count: SettlementLimits.maxBodyBytes)
            let slow = try RawConnection(port: server.port)
            slow.send(signedHead("POST", "/v1/admin/accounts", body: big))
            slow.send("   ")
            let answer = try await slow.read(for: 30) { $0.contains("\r\n\r\n") }
            #expect(answer.text.hasPrefix("HTTP/1.1 408"), "\(answer.text.prefix(300))")
            // Its share is free again: the same caller is served.
            let served = try await server.admin(.POST, "/v1/admin/accounts", json: ["name": "Wei", "initialBalance": 100])
            #expect(served.status == 201, "\(served.status) \(served.message)")
        }
    }

    @Test func aBodyOnAGetIsRefusedBeforeItIsRead() async throws {
        try await withServer { server in
            for head in ["GET /v1/time HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n",
                         signedHead("GET", "/v1/admin/reports/flags", body: Array(repeating: 32, count: 2_097_152))] {
                let connection = try RawConnection(port: server.port)
                connection.send(head)
                let answer = try await connection.read(for: 10) { $0.contains("\r\n\r\n") }
                #expect(answer.text.hasPrefix("HTTP/1.1 400"), "\(answer.text.prefix(300))")
            }
        }
    }
}
