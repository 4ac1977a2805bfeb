import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import SettlementClient
import SettlementCore
import Testing

/// The settlement client against answers no settlementd gives: `GET /v1/time` is unsigned, so a wrong uplink URL or a
/// man in the middle can answer anything. A scripted HTTP service on loopback plays that part.
@Suite struct ClientAnswerTests {
    /// Runs `body` against a service that answers `GET /v1/time` with `json`.
    func withTimeService(answering json: String, _ body: @Sendable (String) async throws -> Void) async throws {
        let router = Router()
        router.get("v1/time") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: json)))
        }
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        var logger = Logger(label: "time-service")
        logger.logLevel = .warning
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { channel in continuation.yield(channel.localAddress?.port ?? 0) }, logger: logger)
        let services = ServiceGroup(configuration: .init(services: [app], logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await services.run() }
            var iterator = ports.makeAsyncIterator()
            let port = await iterator.next() ?? 0
            do {
                try await body("http://127.0.0.1:\(port)")
            } catch {
                await services.triggerGracefulShutdown()
                throw error
            }
            await services.triggerGracefulShutdown()
            try await group.waitForAll()
        }
    }

    @Test(arguments: ["-9223372036854775808", "9223372036854775807", "0", "4102444801"])
    func aTimeNoServiceHasIsABadAnswer(unixTime: String) async throws {
        try await withTimeService(answering: #"{"unixTime":\#(unixTime),"signingWindow":300}"#) { url in
            let client = try SettlementClient(baseURL: url, key: .terminal(1), secret: Array(repeating: 7, count: 32))
            do {
                _ = try await client.time()
                Issue.record("a service time of \(unixTime) was taken")
            } catch let error as SettlementClientError {
                #expect(error.kind == .badAnswer && error.message.contains(unixTime), "\(error.message)")
            }
            await client.shutdown()
        }
    }

    @Test func aTimeOfThisCenturyIsTaken() async throws {
        try await withTimeService(answering: #"{"unixTime":1767225600,"signingWindow":300}"#) { url in
            let client = try SettlementClient(baseURL: url, key: .terminal(1), secret: Array(repeating: 7, count: 32))
            let time = try await client.time()
            await client.shutdown()
            #expect(time == Date(timeIntervalSince1970: 1_767_225_600))
        }
    }
}
