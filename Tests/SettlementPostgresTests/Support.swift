import CampusCard
import Foundation
import Logging
import SettlementCore
import SettlementPostgres
import TestSupport

/// A fresh database on the test process's cluster, and a store on it for the body (pool run and shut down around it).
func withFreshStore<Result: Sendable>(maximumConnections: Int = 8,
                                      _ body: (PostgresSettlementStore, String) async throws -> Result) async throws -> Result {
    let url = try PostgresServer.shared().createDatabase()
    return try await PostgresSettlementStore.withStore(url: url, maximumConnections: maximumConnections, logger: testLogger) {
        try await body($0, url)
    }
}

/// Silent, unless ONECARD_PG_TEST_LOG=trace|debug|... (the pool's own diagnostics, on stderr).
let testLogger: Logger = {
    guard let level = ProcessInfo.processInfo.environment["ONECARD_PG_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) else {
        return Logger(label: "settlement-postgres-tests", factory: { _ in SwiftLogNoOpLogHandler() })
    }
    var logger = Logger(label: "settlement-postgres-tests", factory: { StreamLogHandler.standardError(label: $0) })
    logger.logLevel = level
    return logger
}()

let day0 = Date(timeIntervalSince1970: 1_795_000_000)

/// A card's purse history: debits with consecutive counters and balances, dealt out to terminals.
struct PurseHistory {
    var uid: String
    var records: [(counter: UInt16, before: Fen, amount: Fen)]

    init(uid: String, start: Fen, count: Int, firstCounter: UInt16 = 1) {
        self.uid = uid
        var balance = start
        var counter = firstCounter
        records = []
        for index in 0..<count {
            let amount = Fen(100 + (index * 37) % 400)
            records.append((counter, balance, amount))
            balance = balance - amount
            counter &+= 1
        }
    }
}

func debit(terminal: TerminalID, sequence: UInt32, uid: String, serial: UInt32?, before: Fen, amount: Fen,
           counterBefore: UInt16, outcome: RecordOutcome = .done, at date: Date = day0) -> TerminalRecord {
    TerminalRecord(terminalID: terminal, terminalSequence: sequence, kind: .purseDebit, cardUID: uid, cardSerial: serial,
                   amount: amount, balanceBefore: before, counterBefore: counterBefore, outcome: outcome,
                   balanceAfter: outcome == .done ? before - amount : nil,
                   counterAfter: outcome == .done ? counterBefore &+ 1 : nil, createdAt: date)
}

/// Cards `count` issued to one account each, with UIDs 04000001… and serials 1001….
func issueCards(_ store: PostgresSettlementStore, count: Int) async throws -> [Card] {
    var cards: [Card] = []
    for index in 0..<count {
        let account = try await store.openAccount(name: "holder \(index)", initialBalance: 10_000, at: day0)
        let hex = String(index + 1, radix: 16, uppercase: true)
        let uid = "04" + String(repeating: "0", count: 6 - hex.count) + hex
        cards.append(try await store.issueCard(serial: UInt32(1001 + index), uid: uid, accountID: account.id, at: day0))
    }
    return cards
}

func registerTerminals(_ store: PostgresSettlementStore, _ ids: [TerminalID], merchant: (TerminalID) -> String) async throws {
    for id in ids {
        try await store.putTerminal(TerminalInfo(id: id, merchant: merchant(id), secret: Array(repeating: UInt8(id.rawValue & 0xFF), count: 32)))
    }
}

