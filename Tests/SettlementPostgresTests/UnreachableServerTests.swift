import Foundation
import SettlementCore
import SettlementPostgres
import Testing
import TestSupport

/// A PostgreSQL that is not there: settlementd and the store fail with one typed line after the request deadline,
/// never hang (the pool alone retries its connection for ever).
@Suite struct UnreachableServerTests {
    /// A loopback port nobody listens on.
    static func closedURL() throws -> String {
        "postgres://onecard:secret@127.0.0.1:\(try SettlementProcess.freePort())/nowhere"
    }

    @Test func theStoreGivesUpAfterItsDeadline() async throws {
        let store = try PostgresSettlementStore(url: try Self.closedURL(), requestTimeout: .seconds(2), logger: testLogger)
        let started = ContinuousClock.now
        do {
            try await store.start()
            Issue.record("the store started without a server")
            await store.shutdown()
        } catch let error as SettlementError {
            #expect(error.code == .unavailable, "\(error)")
            #expect(error.message.contains("PostgreSQL"))
        }
        // The deadline is 2 s; the pool then takes its time to wind down (22.9 s seen on a loaded machine): a bound
        // against a hang, not a latency figure.
        #expect(ContinuousClock.now - started < .seconds(90))
    }

    @Test func settlementdExits69WithOneLine() throws {
        let work = NSTemporaryDirectory() + "settlementd-unreachable-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        let keys = work + "/admin.keys"
        try ("office:" + String(repeating: "ab", count: 32) + "\n").write(toFile: keys, atomically: true, encoding: .utf8)
        chmod(keys, 0o600)
        let started = Date()
        let result = run(try BuiltExecutable.path("settlementd"),
                         ["--postgres", try Self.closedURL(), "--request-timeout", "2", "--listen", "127.0.0.1:0", "--admin-key-file", keys],
                         timeout: 60)
        #expect(result.status == 69, "\(result.status): \(result.stderr)")
        let lines = result.stderr.split(separator: "\n").filter { $0.hasPrefix("settlementd:") }
        #expect(lines.count == 1 && lines[0].contains("PostgreSQL") && !lines[0].contains("secret"), "\(result.stderr)")
        #expect(Date().timeIntervalSince(started) < 60)
    }
}
