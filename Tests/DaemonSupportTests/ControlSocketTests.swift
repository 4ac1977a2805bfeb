import Foundation
import Logging
import Testing
@testable import DaemonSupport
#if canImport(Glibc)
import Glibc
#endif

/// Counts handler streams that ended by termination (client gone, server stopped), for the cancellation tests.
final class StreamLedger: @unchecked Sendable {
    private let lock = NSLock()
    private var opened = 0
    private var terminated = 0
    private var arrived = 0
    func open() { lock.withLock { opened += 1 } }
    func arrive() { lock.withLock { arrived += 1 } }
    var arrivals: Int { lock.withLock { arrived } }
    func terminate() { lock.withLock { terminated += 1 } }
    var counts: (opened: Int, terminated: Int) { lock.withLock { (opened, terminated) } }
}

struct Echo: Codable { var text: String }
struct Count: Codable { var n: Int }

/// The commands of the test daemon: echo, count (N lines), slow (one line after 200 ms), events (until cancelled),
/// flood (lines of 100 bytes, as fast as they go). Anything else: unknown-command.
func testHandler(ledger: StreamLedger) -> ControlSocketServer.Handler {
    { request in
        switch request.command {
        case "echo":
            do throws(ControlErrorBody) {
                let echo = try request.decode(Echo.self)
                return .single(ControlResponseLine(["echo": echo.text]))
            } catch {
                return .single(ControlResponseLine(error: error))
            }
        case "count":
            guard let count = try? request.decode(Count.self) else { return .single(.error(.badArguments, "count needs n")) }
            return AsyncStream { continuation in
                for i in 0..<count.n { continuation.yield(ControlResponseLine(["i": i])) }
                continuation.finish()
            }
        case "barrier":
            // Answers true once `n` barrier requests are being handled at the same time (false after 20 s): only a
            // server that serves clients side by side can answer them all true.
            guard let count = try? request.decode(Count.self) else { return .single(.error(.badArguments, "barrier needs n")) }
            ledger.arrive()
            let deadline = ContinuousClock.now + .seconds(20)
            while ledger.arrivals < count.n && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(5)) }
            return .single(ControlResponseLine(["barrier": ledger.arrivals >= count.n]))
        case "slow":
            try? await Task.sleep(for: .milliseconds(200))
            return .single(ControlResponseLine(["slow": true]))
        case "events", "flood":
            let flood = request.command == "flood"
            ledger.open()
            return AsyncStream { continuation in
                let producer = Task {
                    var i = 0
                    while !Task.isCancelled {
                        continuation.yield(ControlResponseLine(["event": String(i) + (flood ? String(repeating: "x", count: 80) : "")]))
                        i += 1
                        if flood { await Task.yield() } else { try? await Task.sleep(for: .milliseconds(10)) }
                    }
                }
                continuation.onTermination = { _ in
                    producer.cancel()
                    ledger.terminate()
                }
            }
        default:
            return .single(.error(.unknownCommand, "unknown command \(request.command): use echo, count, slow or events"))
        }
    }
}

extension AsyncStream where Element == ControlResponseLine {
    static func single(_ line: ControlResponseLine) -> AsyncStream<ControlResponseLine> {
        AsyncStream { continuation in
            continuation.yield(line)
            continuation.finish()
        }
    }
}

/// A server on a fresh socket path in a temporary directory, stopped and its directory removed by `finish()`.
final class TestServer: Sendable {
    let directory: String
    let path: String
    let server: ControlSocketServer
    let ledger = StreamLedger()

    init(configure: (inout ControlSocketServer.Configuration) -> Void = { _ in }) throws {
        directory = NSTemporaryDirectory() + "onecard-ctl-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        path = directory + "/cardd.sock"
        var configuration = ControlSocketServer.Configuration(path: path)
        configure(&configuration)
        server = ControlSocketServer(configuration: configuration, logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() },
                                     handler: testHandler(ledger: ledger))
        try server.start()
    }

    func client() async throws -> ControlSocketClient { try await ControlSocketClient.connect(path: path) }

    func finish() async {
        await server.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

func object(_ line: Data?) throws -> [String: Any] {
    let line = try #require(line)
    return try #require(try JSONSerialization.jsonObject(with: line) as? [String: Any], "not an object: \(String(decoding: line, as: UTF8.self))")
}

func errorCode(_ line: Data?) throws -> String? {
    let error = try object(line)["error"] as? [String: Any]
    #expect((error?["message"] as? String)?.isEmpty == false)
    return error?["code"] as? String
}

/// Runs `body` on a new thread (blocking calls off the cooperative pool) and returns its result.
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

/// Polls `condition` for up to `seconds` (generous: the cooperative pool may be starved by tests that block it).
func eventually(_ seconds: Double = 15, _ condition: () -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

@Suite struct ControlSocketTests {
    @Test func requestsAreAnsweredInOrderOnOneConnection() async throws {
        let test = try TestServer()
        let client = try await test.client()
        try await client.send(["command": "echo", "text": "hello"])
        try await client.send(["command": "count", "n": 3] as [String: AnyCodable])
        try await client.send(["command": "echo", "text": "after"])
        #expect(try object(await client.nextLine())["echo"] as? String == "hello")
        for i in 0..<3 { #expect(try object(await client.nextLine())["i"] as? Int == i) }
        #expect(try object(await client.nextLine())["echo"] as? String == "after")
        client.close()
        await test.finish()
    }

    @Test func concurrentClientsAreServedSideBySide() async throws {
        let test = try TestServer()
        let clients = 8
        try await withThrowingTaskGroup(of: String?.self) { group in
            for index in 0..<clients {
                group.addTask {
                    let client = try await test.client()
                    defer { client.close() }
                    try await client.send(["command": "barrier", "n": AnyCodable.int(clients)] as [String: AnyCodable])
                    try await client.send(["command": "echo", "text": "client \(index)"])
                    #expect(try object(await client.nextLine(timeout: .seconds(30)))["barrier"] as? Bool == true)
                    return try object(await client.nextLine())["echo"] as? String
                }
            }
            var answers: Set<String> = []
            for try await answer in group { answers.insert(try #require(answer)) }
            #expect(answers == Set((0..<clients).map { "client \($0)" }))
        }
        await test.finish()
    }

    @Test func garbageIsAnsweredWithErrorLinesAndTheConnectionStays() async throws {
        let test = try TestServer()
        let client = try await test.client()
        let cases: [(String, String)] = [
            ("not json", "bad-json"),
            ("{\"command\": \"status\"", "bad-json"),
            ("[1, 2]", "bad-request"),
            ("\"status\"", "bad-request"),
            ("{\"nocommand\": 1}", "bad-request"),
            ("{\"command\": 42}", "bad-request"),
            ("{\"command\": \"\"}", "bad-request"),
            ("{\"command\": \"launch\"}", "unknown-command"),
            ("{\"command\": \"echo\"}", "bad-arguments"),
            ("{\"command\": \"echo\", \"text\": 5}", "bad-arguments"),
        ]
        for (line, _) in cases { try await client.send(rawLine: line) }
        try client.send(bytes: [0xFF, 0xFE, 0x7B, 0x0A])  // not UTF-8
        for (line, code) in cases { #expect(try errorCode(await client.nextLine()) == code, "\(line)") }
        #expect(try errorCode(await client.nextLine()) == "bad-json")
        try await client.send(rawLine: "")  // blank lines are skipped
        try await client.send(["command": "echo", "text": "still here"])
        #expect(try object(await client.nextLine())["echo"] as? String == "still here")
        client.close()
        await test.finish()
    }

    @Test func anOverlongLineIsRefusedAndTheConnectionClosed() async throws {
        let test = try TestServer { $0.maximumLineLength = 64 * 1024 }
        // Without a newline: the server must not wait for one.
        let client = try await test.client()
        try client.send(bytes: Array(#"{"command": "echo", "text": ""#.utf8) + [UInt8](repeating: 0x61, count: 70 * 1024))
        #expect(try errorCode(await client.nextLine()) == "line-too-long")
        #expect(try await client.nextLine() == nil)
        // With a newline, arriving whole; a line exactly at the limit is fine.
        let atLimit = try await test.client()
        let prefix = #"{"command": "echo", "text": ""#
        let text = String(repeating: "b", count: 64 * 1024 - prefix.utf8.count - 2)
        try await atLimit.send(rawLine: prefix + text + "\"}")
        #expect(try object(await atLimit.nextLine())["echo"] as? String == text)
        try await atLimit.send(rawLine: prefix + text + "b\"}")
        #expect(try errorCode(await atLimit.nextLine()) == "line-too-long")
        #expect(try await atLimit.nextLine() == nil)
        #expect(await eventually { test.server.activeConnections == 0 })
        await test.finish()
    }

    @Test func aClientLeavingMidStreamCancelsItsStream() async throws {
        let test = try TestServer()
        let client = try await test.client()
        try await client.send(["command": "events"])
        for i in 0..<3 { #expect(try object(await client.nextLine())["event"] as? String == String(i)) }
        #expect(test.ledger.counts == (1, 0))
        client.close()
        #expect(await eventually { test.ledger.counts.terminated == 1 })
        #expect(await eventually { test.server.activeConnections == 0 })
        // Others are unaffected.
        let other = try await test.client()
        try await other.send(["command": "echo", "text": "next"])
        #expect(try object(await other.nextLine())["echo"] as? String == "next")
        await test.finish()
    }

    @Test func halfCloseGetsTheAnswersThenEOF() async throws {
        let test = try TestServer()
        let client = try await test.client()
        try await client.send(["command": "slow"])
        client.finishSending()
        #expect(try object(await client.nextLine())["slow"] as? Bool == true)
        #expect(try await client.nextLine() == nil)
        await test.finish()
    }

    /// The client side runs on a thread of its own with the blocking API: the idle clock runs on the server's threads,
    /// so a client stalled by a busy cooperative pool (other tests blocking it) would be closed for idling.
    @Test func idleConnectionsAreClosed() async throws {
        let idle = Duration.seconds(1)
        let test = try TestServer { $0.idleTimeout = idle }
        // Observed on the thread, checked here (expectations belong to the test's task).
        struct Observed: Sendable {
            var first: [Data?] = [], firstWait = Duration.zero
            var second: [Data?] = [], secondWait = Duration.zero
            var events = 0, streamed = Duration.zero
        }
        let observed = try await onThread {
            var observed = Observed()
            let client = try ControlSocketClient(path: test.path)
            let connected = ContinuousClock.now
            observed.first = [try client.readLine(timeout: .seconds(20)), try client.readLine()]
            observed.firstWait = ContinuousClock.now - connected

            // After an answer the idle time starts again.
            let again = try ControlSocketClient(path: test.path)
            try again.send(["command": "echo", "text": "x"])
            observed.second = [try again.readLine(timeout: .seconds(20))]
            let answered = ContinuousClock.now
            observed.second.append(try again.readLine(timeout: .seconds(20)))
            observed.secondWait = ContinuousClock.now - answered

            // An event stream is not idle: it outlives the idle time.
            let watcher = try ControlSocketClient(path: test.path)
            try watcher.send(["command": "events"])
            let streaming = ContinuousClock.now
            while ContinuousClock.now - streaming < idle * 2 {
                guard let line = try watcher.readLine(timeout: .seconds(20)),
                      (try? JSONSerialization.jsonObject(with: line) as? [String: Any])?["event"] != nil else { break }
                observed.events += 1
            }
            observed.streamed = ContinuousClock.now - streaming
            watcher.close()
            return observed
        }
        #expect(try errorCode(observed.first[0]) == "idle-timeout")
        #expect(observed.first[1] == nil)
        #expect(observed.firstWait >= idle - .milliseconds(50))
        #expect(try object(observed.second[0])["echo"] as? String == "x")
        #expect(try errorCode(observed.second[1]) == "idle-timeout")
        #expect(observed.secondWait >= idle - .milliseconds(50))
        #expect(observed.streamed >= idle * 2, "the stream ended after \(observed.events) events")
        await test.finish()
    }

    @Test func clientsBeyondTheLimitAreToldBusy() async throws {
        let test = try TestServer { $0.maximumClients = 1 }
        let first = try await test.client()
        try await first.send(["command": "echo", "text": "1"])
        _ = try await first.nextLine()
        let second = try await test.client()
        #expect(try errorCode(await second.nextLine()) == "busy")
        #expect(try await second.nextLine() == nil)
        first.close()
        #expect(await eventually { test.server.activeConnections == 0 })
        let third = try await test.client()
        try await third.send(["command": "echo", "text": "3"])
        #expect(try object(await third.nextLine())["echo"] as? String == "3")
        await test.finish()
    }

    @Test func aClientThatDoesNotReadIsDropped() async throws {
        let test = try TestServer {
            $0.maximumQueuedBytes = 64 * 1024
            $0.stopFlushTimeout = .seconds(10)  // the time the error line has to reach the client once it reads again
        }
        let client = try await test.client()
        try await client.send(["command": "flood"])
        // Not reading: the socket buffers fill, then the server's queue.
        #expect(await eventually { test.ledger.counts.terminated == 1 })
        var last: Data?
        var count = 0
        while let line = try await client.nextLine() {
            last = line
            count += 1
        }
        #expect(count > 1)
        #expect(try errorCode(last) == "slow-client")
        await test.finish()
    }

    @Test func stopEndsStreamsClosesClientsAndRemovesTheSocket() async throws {
        let test = try TestServer()
        let watcher = try await test.client()
        try await watcher.send(["command": "events"])
        _ = try await watcher.nextLine()
        let idle = try await test.client()
        #expect(FileManager.default.fileExists(atPath: test.path))
        await test.server.stop()
        #expect(!FileManager.default.fileExists(atPath: test.path))
        #expect(test.ledger.counts.terminated == 1)
        #expect(test.server.activeConnections == 0)
        // Both clients see the end (the watcher after the events already sent).
        while try await watcher.nextLine() != nil {}
        #expect(try await idle.nextLine() == nil)
        #expect(throws: ControlSocketError.self) { try ControlSocketClient(path: test.path) }
        await test.server.stop()  // idempotent
        await test.finish()
    }

    @Test func runStopsWhenItsTaskIsCancelled() async throws {
        let directory = NSTemporaryDirectory() + "onecard-ctl-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/cardd.sock"
        let server = ControlSocketServer(configuration: .init(path: path), logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() },
                                         handler: testHandler(ledger: StreamLedger()))
        let running = Task { try await server.run() }
        #expect(await eventually { FileManager.default.fileExists(atPath: path) })
        running.cancel()
        try await running.value
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test func theSocketFileHasMode0660AndTheChosenGroup() async throws {
        let gid = getegid()
        let name = try #require(getgrgid(gid).map { String(cString: $0.pointee.gr_name) })
        let test = try TestServer { $0.group = name }
        var info = stat()
        #expect(stat(test.path, &info) == 0)
        #expect(info.st_mode & 0o7777 == 0o660)
        #expect(info.st_mode & S_IFMT == S_IFSOCK)
        #expect(info.st_gid == gid)
        await test.finish()
    }

    @Test func aMissingGroupIsATypedErrorNamingIt() throws {
        let directory = NSTemporaryDirectory() + "onecard-ctl-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var configuration = ControlSocketServer.Configuration(path: directory + "/cardd.sock", group: "onecard-no-such-group")
        configuration.mode = 0o660
        let server = ControlSocketServer(configuration: configuration, logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() },
                                         handler: testHandler(ledger: StreamLedger()))
        do {
            try server.start()
            Issue.record("started with a missing group")
        } catch {
            #expect(error.code == .unknownGroup)
            #expect(error.message.contains("onecard-no-such-group"))
        }
        #expect(!FileManager.default.fileExists(atPath: configuration.path))
    }

    @Test func aStaleSocketIsReplacedALiveOneRefusedAFileLeftAlone() async throws {
        let test = try TestServer()
        let logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        // Live: the running server answers, so a second one must not take its path.
        let second = ControlSocketServer(configuration: .init(path: test.path), logger: logger, handler: testHandler(ledger: StreamLedger()))
        #expect { try second.start() } throws: { ($0 as? ControlSocketError)?.code == .inUse }
        let client = try await test.client()
        try await client.send(["command": "echo", "text": "first still serves"])
        #expect(try object(await client.nextLine())["echo"] as? String == "first still serves")
        client.close()
        await test.server.stop()

        // Stale: a socket file nobody listens on (a crashed daemon's).
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in for (i, b) in test.path.utf8.enumerated() { raw[i] = b } }
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        #expect(bound == 0)
        close(fd)
        #expect(FileManager.default.fileExists(atPath: test.path))
        let third = ControlSocketServer(configuration: .init(path: test.path), logger: logger, handler: testHandler(ledger: StreamLedger()))
        try third.start()
        let again = try await ControlSocketClient.connect(path: test.path)
        try await again.send(["command": "echo", "text": "replaced"])
        #expect(try object(await again.nextLine())["echo"] as? String == "replaced")
        again.close()
        await third.stop()

        // Not a socket: left alone.
        #expect(FileManager.default.createFile(atPath: test.path, contents: Data("keep me".utf8)))
        let fourth = ControlSocketServer(configuration: .init(path: test.path), logger: logger, handler: testHandler(ledger: StreamLedger()))
        #expect { try fourth.start() } throws: { ($0 as? ControlSocketError)?.code == .notASocket }
        #expect(FileManager.default.contents(atPath: test.path) == Data("keep me".utf8))
        await test.finish()
    }

    @Test func aClientWithoutADaemonGetsNotRunning() throws {
        let path = NSTemporaryDirectory() + "onecard-none-\(UUID().uuidString.prefix(8)).sock"
        #expect { try ControlSocketClient(path: path) } throws: { ($0 as? ControlSocketError)?.code == .notRunning }
    }
}

/// A JSON value for mixed-type request literals in tests.
enum AnyCodable: Encodable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, Sendable {
    case string(String), int(Int)
    init(stringLiteral value: String) { self = .string(value) }
    init(integerLiteral value: Int) { self = .int(value) }
    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let value): try container.encode(value)
        case .int(let value): try container.encode(value)
        }
    }
}
