import ArgumentParser
import CampusCard
import Foundation
import Logging
import ServiceLifecycle
import SettlementClient
import SettlementCore
import SettlementServer

/// One box's backlog uploaded to settlementd over loopback HTTP, batch after batch as cardd's uplink sends them
/// (signed requests, each answered before the next is sent): the total time and each batch acknowledgement's latency,
/// beside the same batches put straight into the same kind of store (no HTTP, no signing) to show what the service
/// adds.
struct Upload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A terminal's backlog uploaded to settlementd over loopback HTTP: total time and batch acknowledgement p50/p99, beside direct store ingest.")

    @Option(help: "An SQLite file to create (replaced if present).")
    var sqlite: String?

    @Option(help: "A PostgreSQL URL: a fresh database is created on that server and dropped after (scripts/postgres starts a throwaway server).")
    var postgres: String?

    @Option(help: "How many records in the backlog.")
    var records = 100_000

    @Option(help: "Records per upload request (cardd's uplink.batchSize; its default is 500).")
    var batch = 500

    @Option(help: "How many cards the records touch.")
    var cards = 2_000

    @Option(help: "The random seed of the generated records.")
    var seed: UInt64 = 11

    func validate() throws {
        guard sqlite != nil || postgres != nil else { throw ValidationError("name a database: --sqlite PATH and/or --postgres URL") }
        guard records > 0, (1...SettlementLimits.maxRecordsPerBatch).contains(batch), cards > 0 else {
            throw ValidationError("--records and --cards must be positive and --batch 1–\(SettlementLimits.maxRecordsPerBatch)")
        }
    }

    func run() async throws {
        var backends: [any IngestBackend] = []
        if let sqlite { backends.append(SQLiteIngestBackend(path: sqlite)) }
        if let postgres { backends.append(PostgresIngestBackend(url: postgres)) }
        let workload = Workload(records: records, batch: batch, cards: cards, terminals: 1, seed: seed)
        print("settlebench upload: one terminal's backlog of \(records) records in batches of \(batch) over \(cards) cards, sent in sequence")
        print(String(repeating: "-", count: 100))
        print("backend".padding(toLength: 36, withPad: " ", startingAt: 0) + "path          total s   records/s   batch p50 ms   p99 ms   max ms")
        for backend in backends {
            for overHTTP in [false, true] {
                let result = try await measure(backend, workload, overHTTP: overHTTP)
                try await backend.cleanup()
                print(backend.name.padding(toLength: 36, withPad: " ", startingAt: 0)
                      + (overHTTP ? "HTTP upload " : "store direct").padding(toLength: 12, withPad: " ", startingAt: 0)
                      + String(format: "%9.2f %11.0f %14.2f %8.2f %8.2f", result.seconds, Double(records) / result.seconds,
                               result.percentile(0.50), result.percentile(0.99), result.percentile(1.0)))
            }
        }
    }

    struct Result {
        var seconds: Double
        /// Each batch's acknowledgement latency, milliseconds, sorted.
        var latencies: [Double]

        func percentile(_ p: Double) -> Double {
            guard !latencies.isEmpty else { return 0 }
            // Nearest rank: the smallest value with at least p of the batches at or below it.
            let rank = Int((Double(latencies.count) * p).rounded(.up))
            return latencies[max(0, min(latencies.count, rank) - 1)]
        }
    }

    static let terminalSecret = Array(repeating: UInt8(7), count: 32)

    func measure(_ backend: any IngestBackend, _ workload: Workload, overHTTP: Bool) async throws -> Result {
        let store = try await backend.makeStore(connections: 4)
        try await Ingest.prepare(store, workload, secret: Self.terminalSecret)
        let terminal = workload.terminalIDs[0]
        let clock = ContinuousClock()
        var latencies: [Double] = []
        latencies.reserveCapacity(workload.batches.count)
        func milliseconds(_ duration: Duration) -> Double {
            Double(duration.components.seconds) * 1_000 + Double(duration.components.attoseconds) / 1e15
        }
        func check(_ acks: [RecordAck], _ sent: [TerminalRecord]) throws {
            guard acks.count == sent.count, acks.allSatisfy(\.acknowledges) else {
                throw SettlementError(.storage, "a batch was not acknowledged whole: \(acks.filter { !$0.acknowledges }.prefix(3))")
            }
        }
        guard overHTTP else {
            let total = try await clock.measure {
                for batch in workload.batches {
                    let started = clock.now
                    try check(try await store.ingest(batch, from: terminal, at: Date()), batch)
                    latencies.append(milliseconds(clock.now - started))
                }
            }
            return Result(seconds: milliseconds(total) / 1_000, latencies: latencies.sorted())
        }
        var logger = Logger(label: "settlebench.settlementd")
        logger.logLevel = .warning
        let (ports, announce) = AsyncStream<Int>.makeStream()
        let app = SettlementServer(store: store, admins: AdminCredentials([:]))
            .application(host: "127.0.0.1", port: 0, logger: logger, onServerRunning: { announce.yield($0) })
        let services = ServiceGroup(configuration: .init(services: [app], logger: logger))
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await services.run() }
            var iterator = ports.makeAsyncIterator()
            guard let port = await iterator.next() else { throw SettlementError(.unavailable, "settlementd did not start") }
            let client = try SettlementClient(baseURL: "http://127.0.0.1:\(port)", key: .terminal(terminal.rawValue), secret: Self.terminalSecret)
            do {
                let total = try await clock.measure {
                    for batch in workload.batches {
                        let started = clock.now
                        try check(try await client.upload(batch), batch)
                        latencies.append(milliseconds(clock.now - started))
                    }
                }
                await client.shutdown()
                await services.triggerGracefulShutdown()
                try await group.waitForAll()
                return Result(seconds: milliseconds(total) / 1_000, latencies: latencies.sorted())
            } catch {
                await client.shutdown()
                await services.triggerGracefulShutdown()
                try? await group.waitForAll()
                throw error
            }
        }
    }
}
