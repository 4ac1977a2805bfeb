import ArgumentParser
import CampusCard
import Foundation
import SettlementCore

/// Settlement benchmarks: figures printed side by side, no pass/fail.
@main
struct SettleBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "settlebench",
        abstract: "Settlement service benchmarks (figures only).",
        subcommands: [Ingest.self, Upload.self]
    )
}

/// Where the benchmark runs: a settlement store with every ledger rule, and the same kind of database for the plain
/// INSERT it is compared with. SQLite here; the PostgreSQL backend adds a conformer (`--postgres URL`).
protocol IngestBackend {
    /// e.g. `SQLite (WAL, synchronous=FULL)`.
    var name: String { get }
    /// A fresh, empty store that serves `connections` uploads at once.
    func makeStore(connections: Int) async throws -> any SettlementStore
    /// Inserts the rows into a plain table with the record table's columns, one multi-row INSERT transaction per
    /// batch (no rules, no other table), the lanes at once and each lane's batches in order. Returns the time spent.
    func plainInsert(_ lanes: [[[BenchRow]]]) async throws -> Duration
    /// The same rows through COPY into a plain table (one COPY per batch), where the database has it.
    func copyInsert(_ lanes: [[[BenchRow]]]) async throws -> Duration?
    /// The rows the ledger writes for the same batches, by the same kind of statements and into tables with the same
    /// keys and indexes, with no reads and no rules: each record, a movement per record, the touched cards' books
    /// rewritten (one transaction per batch). What the ledger's writes alone cost.
    func ledgerRowsInsert(_ lanes: [[[BenchRow]]]) async throws -> Duration
    /// Removes what the run created.
    func cleanup() async throws
}

extension IngestBackend {
    func copyInsert(_ lanes: [[[BenchRow]]]) async throws -> Duration? { nil }
}

/// Runs `body` over every batch, the lanes at once (one task each) and each lane's batches in order; returns the time
/// from the first start to the last end.
func measureLanes<Batch: Sendable>(_ lanes: [[Batch]], _ body: @escaping @Sendable (Batch) async throws -> Void) async throws -> Duration {
    try await ContinuousClock().measure {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for lane in lanes {
                group.addTask { for batch in lane { try await body(batch) } }
            }
            try await group.waitForAll()
        }
    }
}

/// One record as the plain INSERT writes it (its digest computed beforehand: the plain side does no work of its own).
struct BenchRow: Sendable {
    var record: TerminalRecord
    var digest: String

    /// The movement the ledger books for the record (the ledger-rows baseline), made before the clock starts: a sale
    /// from the card's wallet to the terminal's merchant (as `prepare` registers it, kept for the daily totals),
    /// anything else from cash to the card.
    var isSale: Bool
    var debit: String
    var credit: String
    var merchant: String?
    var day: String

    init(record: TerminalRecord) {
        self.record = record
        digest = record.contentDigest
        let wallet = Wallet(record.kind) == .purse ? Ledger.purseAccount(record.cardSerial ?? 0) : Ledger.waterAccount(record.cardSerial ?? 0)
        isSale = record.kind == .purseDebit || record.kind == .waterDebit
        merchant = isSale ? Ingest.merchant(of: record.terminalID) : nil
        debit = isSale ? wallet : Ledger.cash
        credit = merchant.map(Ledger.merchantAccount) ?? wallet
        day = Ledger.businessDay(of: record.createdAt)
    }

    /// A card book's typical size after the run (the average measured on the SQLite store: 111 bytes).
    static let typicalBook = [UInt8](repeating: 0x5A, count: 111)
}

struct Ingest: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ingest records/s with every ledger rule through the store, beside a plain batched INSERT of the same rows.")

    @Option(help: "An SQLite file to create (replaced if present); the plain INSERT uses PATH-plain beside it.")
    var sqlite: String?

    @Option(help: "A PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DB): a fresh database is created on that server and dropped after; the plain INSERT (unnest) and COPY go into the same database. scripts/postgres starts a throwaway server.")
    var postgres: String?

    @Option(help: "How many records.")
    var records = 100_000

    @Option(help: "Records per uploaded batch (one transaction each).")
    var batch = 500

    @Option(help: "How many cards the records touch.")
    var cards = 2_000

    @Option(help: "How many terminals upload.")
    var terminals = 20

    @Option(help: "The random seed of the generated records.")
    var seed: UInt64 = 11

    @Option(help: "How many uploads run at once (terminals take turns in lanes, each terminal's batches in order), on both sides.")
    var concurrency = 1

    @Option(help: "How many times to run each side (a fresh database each time; the machine is shared, so look at the spread).")
    var rounds = 1

    func validate() throws {
        guard sqlite != nil || postgres != nil else { throw ValidationError("name a database: --sqlite PATH (or --postgres URL)") }
        guard records > 0, batch > 0, cards > 0, (1...1000).contains(terminals), (1...20).contains(rounds),
              (1...terminals).contains(concurrency) else {
            throw ValidationError("--records, --batch and --cards must be positive, --terminals 1–1000, --rounds 1–20 and --concurrency 1–terminals")
        }
    }

    func run() async throws {
        var backends: [any IngestBackend] = []
        if let sqlite { backends.append(SQLiteIngestBackend(path: sqlite)) }
        if let postgres { backends.append(PostgresIngestBackend(url: postgres)) }
        let workload = Workload(records: records, batch: batch, cards: cards, terminals: terminals, seed: seed)
        print("settlebench ingest: \(records) records in batches of \(batch) from \(terminals) terminals over \(cards) cards, \(concurrency) upload(s) at once")
        print("  mix: \(workload.mix)")
        print(String(repeating: "-", count: 96))
        print("backend".padding(toLength: 34, withPad: " ", startingAt: 0) + "ledger ingest rec/s   plain INSERT rows/s   ratio   booked  flagged  pending")
        for backend in backends {
            for _ in 0..<rounds {
                let result = try await run(backend, workload)
                print(backend.name.padding(toLength: 34, withPad: " ", startingAt: 0)
                    + pad(result.ledgerRate, 19) + pad(result.plainRate, 22) + "   "
                    + String(format: "%.2f", result.ledgerRate / result.plainRate).padding(toLength: 5, withPad: " ", startingAt: 0)
                    + pad(Double(result.booked), 8) + pad(Double(result.flagged), 9) + pad(Double(result.pending), 9))
                print("  ledger imbalance \(result.imbalance.rawValue) fen; daily totals \(result.dailyLines) lines; ledger \(result.ledgerTime), plain \(result.plainTime)")
                if let copy = result.copyRate {
                    print("  COPY of the same rows: \(pad(copy, 0)) rows/s (ledger ingest at " + String(format: "%.2f", result.ledgerRate / copy) + "x of it)")
                }
                print("  the ledger's rows alone (record + movement + card book, no reads, no rules): \(pad(result.ledgerRowsRate, 0)) records/s (ledger ingest at "
                    + String(format: "%.2f", result.ledgerRate / result.ledgerRowsRate) + "x of it)")
                try await backend.cleanup()
            }
        }
    }

    /// The workload's terminals (all with `secret`, all load stations: the mix gives each terminal loads and
    /// subsidies, booked from cash and subsidy after the role lookup) and cards, each card on an account of its own.
    static func prepare(_ store: any SettlementStore, _ workload: Workload, secret: [UInt8]) async throws {
        let start = Date(timeIntervalSince1970: 1_750_000_000)
        for terminal in workload.terminalIDs {
            try await store.putTerminal(TerminalInfo(id: terminal, merchant: merchant(of: terminal), secret: secret, loads: true))
        }
        for card in workload.cardList {
            let account = try await store.openAccount(name: "holder \(card.serial)", initialBalance: 100_000, at: start)
            _ = try await store.issueCard(serial: card.serial, uid: card.uid, accountID: account.id, at: start)
        }
    }

    static func merchant(of terminal: TerminalID) -> String { "canteen-\(terminal.rawValue % 5)" }

    func pad(_ value: Double, _ width: Int) -> String {
        let text = String(Int(value.rounded()))
        return String(repeating: " ", count: max(0, width - text.count)) + text
    }

    struct Result {
        var ledgerRate: Double
        var plainRate: Double
        var ledgerTime: Duration
        var plainTime: Duration
        var booked = 0
        var flagged = 0
        var pending = 0
        var imbalance: Fen = .zero
        var dailyLines = 0
        var copyRate: Double?
        var ledgerRowsRate: Double
    }

    func run(_ backend: any IngestBackend, _ workload: Workload) async throws -> Result {
        let store = try await backend.makeStore(connections: max(4, concurrency))
        let start = Date(timeIntervalSince1970: 1_750_000_000)
        try await Self.prepare(store, workload, secret: Array(repeating: 7, count: 32))
        let lanes = workload.lanes(concurrency)
        let tally = Tally()
        let ledgerTime = try await measureLanes(lanes) { batch in
            let acks = try await store.ingest(batch, from: batch[0].terminalID, at: start.addingTimeInterval(3600))
            tally.add(acks)
        }
        let counts = tally.counts
        let imbalance = try await store.ledgerImbalance()
        let day = Ledger.businessDay(of: workload.batches[0][0].createdAt)
        let daily = try await store.dailyTotals(day: day)
        let rows = lanes.map { $0.map { $0.map { BenchRow(record: $0) } } }
        let plainTime = try await backend.plainInsert(rows)
        let copyTime = try await backend.copyInsert(rows)
        let ledgerRowsTime = try await backend.ledgerRowsInsert(rows)
        func seconds(_ duration: Duration) -> Double {
            Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        }
        return Result(ledgerRate: Double(workload.count) / seconds(ledgerTime), plainRate: Double(workload.count) / seconds(plainTime),
                      ledgerTime: ledgerTime, plainTime: plainTime, booked: counts[.booked, default: 0] + counts[.suspense, default: 0],
                      flagged: counts[.flagged, default: 0], pending: counts[.pending, default: 0], imbalance: imbalance,
                      dailyLines: daily.count, copyRate: copyTime.map { Double(workload.count) / seconds($0) },
                      ledgerRowsRate: Double(workload.count) / seconds(ledgerRowsTime))
    }
}

/// The bookings the lanes' acknowledgements gave, counted.
final class Tally: @unchecked Sendable {
    private let lock = NSLock()
    private var byBooking: [RecordAck.Booking: Int] = [:]

    func add(_ acks: [RecordAck]) {
        lock.withLock { for ack in acks { byBooking[ack.booking, default: 0] += 1 } }
    }

    var counts: [RecordAck.Booking: Int] { lock.withLock { byBooking } }
}

/// The generated upload: cards used at terminals in time order, each card's counter and balance carried on, so the
/// records pass the rules; a mix of purse debits, loads, water debits and settlements, not-done records, and
/// undetermined records their card's next record decides. Batches hold one terminal's records, interleaved.
struct Workload {
    struct CardSpec {
        var serial: UInt32
        var uid: String
        var purse: Fen = 50_000
        var purseCounter: UInt16 = 0
        var water: Fen = 1_000
        var waterCounter: UInt16 = 0
    }

    var cardList: [CardSpec]
    var terminalIDs: [TerminalID]
    var batches: [[TerminalRecord]]
    var count: Int
    var mix: String

    init(records: Int, batch: Int, cards: Int, terminals: Int, seed: UInt64) {
        var random = SplitMix(seed: seed)
        cardList = (0..<cards).map { index in
            let serial = UInt32(100_000 + index)
            return CardSpec(serial: serial, uid: String(format: "%08X", 0x1000_0000 + UInt32(index) * 7_919))
        }
        terminalIDs = (1...terminals).map { TerminalID(UInt16($0)) }
        var perTerminal: [[TerminalRecord]] = Array(repeating: [], count: terminals)
        var sequences = Array(repeating: UInt32(0), count: terminals)
        var kinds: [String: Int] = [:]
        let start = 1_750_000_000
        for index in 0..<records {
            let t = Int(random.next() % UInt64(terminals))
            let c = Int(random.next() % UInt64(cards))
            sequences[t] += 1
            let roll = random.next() % 1000
            var card = cardList[c]
            let kind: TransactionIntent.Kind
            let amount: Fen
            switch roll {
            case 0..<40: (kind, amount) = (.purseLoad, 5_000)
            case 40..<50: (kind, amount) = (.purseSubsidy, 2_000)
            case 50..<150: (kind, amount) = (.waterDebit, Fen(Int(1 + random.next() % 20)))
            case 150..<160: (kind, amount) = (.waterSettle, 500)
            default: (kind, amount) = (.purseDebit, Fen(Int(100 + random.next() % 1500)))
            }
            let isPurse = Wallet(kind) == .purse
            var before = isPurse ? card.purse : card.water
            var counter = isPurse ? card.purseCounter : card.waterCounter
            let outcomeRoll = random.next() % 1000
            var outcome: RecordOutcome = outcomeRoll < 5 ? .notDone : (outcomeRoll < 10 ? .undetermined : .done)
            let after = Ledger.expectedBalanceAfter(kind: kind, amount: amount, balanceBefore: before)
            if after < .zero { outcome = .notDone }
            let createdAt = Date(timeIntervalSince1970: TimeInterval(start + index / 10))
            var record = TerminalRecord(terminalID: terminalIDs[t], terminalSequence: sequences[t], kind: kind, cardUID: card.uid,
                                        cardSerial: card.serial, amount: amount, balanceBefore: before, counterBefore: counter,
                                        outcome: outcome, createdAt: createdAt)
            if outcome != .notDone {
                // Done or undetermined: the card carries it (an undetermined one is decided by the card's next record).
                counter &+= 1
                before = after
                if outcome == .done {
                    record.balanceAfter = after
                    record.counterAfter = counter
                }
            }
            if isPurse { (card.purse, card.purseCounter) = (before, counter) } else { (card.water, card.waterCounter) = (before, counter) }
            cardList[c] = card
            kinds[kind.rawValue + (outcome == .done ? "" : "/" + outcome.rawValue), default: 0] += 1
            perTerminal[t].append(record)
        }
        var chunks: [[[TerminalRecord]]] = perTerminal.map { list in
            stride(from: 0, to: list.count, by: batch).map { Array(list[$0..<min($0 + batch, list.count)]) }
        }
        batches = []
        while chunks.contains(where: { !$0.isEmpty }) {
            for index in chunks.indices where !chunks[index].isEmpty { batches.append(chunks[index].removeFirst()) }
        }
        count = records
        mix = kinds.sorted { $0.value > $1.value }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        // Reset the cards' figures: the store starts them fresh.
        for index in cardList.indices { cardList[index] = CardSpec(serial: cardList[index].serial, uid: cardList[index].uid) }
    }
}

extension Workload {
    /// The batches dealt into `count` lanes by terminal (a terminal's batches stay in one lane, in order).
    func lanes(_ count: Int) -> [[[TerminalRecord]]] {
        var lanes: [[[TerminalRecord]]] = Array(repeating: [], count: count)
        for batch in batches { lanes[Int(batch[0].terminalID.rawValue) % count].append(batch) }
        return lanes.filter { !$0.isEmpty }
    }
}

/// A small deterministic generator (SplitMix64): the same seed, the same workload.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
