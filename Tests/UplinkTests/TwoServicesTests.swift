import CampusCard
import Foundation
import SettlementClient
import SettlementCore
import TestSupport
import Testing

/// Item 7 of issue 11: settlementd keeps no state of its own. Two settlementd processes on one PostgreSQL database,
/// over HTTP: many terminals upload at once, and every batch goes to both processes at the same moment (a terminal
/// retrying through a load balancer). Each record is accepted by exactly one of them, the other answers it as a
/// duplicate with the same acknowledgement, and the ledger books it once.
@Suite(.serialized) struct TwoServicesTests {
    static let terminals = 8
    static let cardsPerTerminal = 4
    static let debitsPerCard = 60
    static let batchSize = 40

    /// Terminal `t`'s records: done purse debits of 0.50 on its own cards, each card's counters continuous.
    static func records(terminal: Int, start: Date) -> [TerminalRecord] {
        var records: [TerminalRecord] = []
        for step in 0..<debitsPerCard {
            for card in 0..<cardsPerTerminal {
                let before = Fen(100_000 - step * 50)
                records.append(TerminalRecord(terminalID: TerminalID(UInt16(terminal)), terminalSequence: UInt32(records.count + 1),
                                              kind: .purseDebit, cardUID: uid(terminal: terminal, card: card), cardSerial: serial(terminal: terminal, card: card),
                                              amount: 50, balanceBefore: before, counterBefore: UInt16(step), outcome: .done,
                                              balanceAfter: before - 50, counterAfter: UInt16(step + 1),
                                              createdAt: start.addingTimeInterval(Double(records.count))))
            }
        }
        return records
    }

    static func uid(terminal: Int, card: Int) -> String { String(format: "%08X", 0x7100_0000 + terminal * 16 + card) }
    static func serial(terminal: Int, card: Int) -> UInt32 { UInt32(40_000_000 + terminal * 16 + card) }

    @Test func twoProcessesOnOneDatabaseBookEveryRecordOnce() async throws {
        let postgres = try PostgresServer.start()
        defer { try? postgres.stop() }
        let database = try postgres.createDatabase()
        let first = try SettlementProcess(postgres: database)
        defer { first.cleanUp() }
        let second = try SettlementProcess(postgres: database)
        defer { second.cleanUp() }

        let office = try Office(first)
        defer { office.close() }
        var secrets: [Int: [UInt8]] = [:]
        let account = try await office.openAccount("two-services", balance: 0)
        for terminal in 1...Self.terminals {
            let hex = try await office.registerTerminal(UInt16(terminal), merchant: "canteen-\(terminal % 3)")
            secrets[terminal] = stride(from: 0, to: hex.count, by: 2).map { offset in
                let start = hex.index(hex.startIndex, offsetBy: offset)
                return UInt8(hex[start..<hex.index(start, offsetBy: 2)], radix: 16)!
            }
            for card in 0..<Self.cardsPerTerminal {
                _ = try await office.issueCard(serial: Self.serial(terminal: terminal, card: card), uid: Self.uid(terminal: terminal, card: card), account: account.id)
            }
        }

        let start = Date().addingTimeInterval(-7_200)
        // Every terminal at once; each batch to both processes at once.
        let answers = try await withThrowingTaskGroup(of: [(accepted: Int, duplicate: Int, other: [String])].self) { group in
            for terminal in 1...Self.terminals {
                let secret = secrets[terminal]!
                group.addTask {
                    let viaFirst = try SettlementClient(baseURL: first.url, key: .terminal(UInt16(terminal)), secret: secret)
                    let viaSecond = try SettlementClient(baseURL: second.url, key: .terminal(UInt16(terminal)), secret: secret)
                    var tallies: [(accepted: Int, duplicate: Int, other: [String])] = []
                    do {
                        let records = Self.records(terminal: terminal, start: start)
                        for offset in stride(from: 0, to: records.count, by: Self.batchSize) {
                            let batch = Array(records[offset..<min(offset + Self.batchSize, records.count)])
                            async let a = viaFirst.upload(batch)
                            async let b = viaSecond.upload(batch)
                            let (one, two) = try await (a, b)
                            for (x, y) in zip(one, two) {
                                let statuses = [x.status, y.status]
                                var tally = (accepted: statuses.filter { $0 == .accepted }.count,
                                             duplicate: statuses.filter { $0 == .duplicate }.count, other: [String]())
                                if x.booking != y.booking || x.flags != y.flags || x.terminalSequence != y.terminalSequence {
                                    tally.other.append("terminal \(terminal) sequence \(x.terminalSequence): \(x) vs \(y)")
                                }
                                tallies.append(tally)
                            }
                        }
                    } catch {
                        await viaFirst.shutdown()
                        await viaSecond.shutdown()
                        throw error
                    }
                    await viaFirst.shutdown()
                    await viaSecond.shutdown()
                    return tallies
                }
            }
            var all: [(accepted: Int, duplicate: Int, other: [String])] = []
            for try await tallies in group { all += tallies }
            return all
        }

        let total = Self.terminals * Self.cardsPerTerminal * Self.debitsPerCard
        #expect(answers.count == total)
        #expect(answers.allSatisfy { $0.accepted == 1 && $0.duplicate == 1 },
                "a record was accepted by both processes or by neither: \(answers.filter { $0.accepted != 1 }.prefix(5))")
        #expect(answers.flatMap(\.other).isEmpty, "the two answers to one record differ: \(answers.flatMap(\.other).prefix(5))")

        // The books: each card's statement has its debits once; no repeat or conflict flag; the daily totals add up.
        for terminal in [1, Self.terminals] {
            for card in 0..<Self.cardsPerTerminal {
                let entries = try await office.statement(Self.serial(terminal: terminal, card: card))
                let sequences = entries.compactMap(\.terminalSequence)
                #expect(sequences.count == Self.debitsPerCard && Set(sequences).count == Self.debitsPerCard,
                        "card \(card) of terminal \(terminal): \(sequences.count) entries")
            }
        }
        let flags = try await office.flags()
        #expect(!flags.contains { ["counter-repeat", "content-conflict"].contains($0.code) }, "\(flags.prefix(5))")
        var days = Set<String>()
        for record in (1...Self.terminals).flatMap({ Self.records(terminal: $0, start: start) }) { days.insert(Ledger.businessDay(of: record.createdAt)) }
        var count = 0, sum = Fen.zero
        for day in days {
            for line in try await office.daily(day) where line.terminalID != nil {
                count += line.count
                sum = sum + line.total
            }
        }
        #expect(count == total && sum == Fen(total * 50), "daily totals: \(count) sales, \(sum)")
        #expect(first.stop() == 0 && second.stop() == 0)
        print("two settlementd on one PostgreSQL: \(Self.terminals) terminals, \(total) records, each sent to both: \(total) accepted once, \(total) duplicates")
    }
}
