import CampusCard
import Foundation
import SettlementCore
import Testing

/// A store with one merchant terminal (3, "canteen"), one office terminal (4, "office", a load station), one account (balance
/// 100.00) and its card 1001 (UID A1B2C3D4). Runs `body`, then checks the ledger balances and removes the store.
func withStore(_ backend: Backend, _ body: (any SettlementStore, Fixture) async throws -> Void) async throws {
    let under = try await backend.make()
    do {
        var fixture = try await Fixture.set(up: under.store)
        fixture.balances = under.balances
        try await body(under.store, fixture)
        #expect(try await under.store.ledgerImbalance() == .zero, "the ledger must balance after every test")
    } catch {
        try? await under.cleanup()
        throw error
    }
    try await under.cleanup()
}

struct Fixture: Sendable {
    static let t0 = Date(timeIntervalSince1970: 1_750_000_000)  // 2025-06-15 23:06:40 in UTC+8
    var account: Account
    var card: Card
    let terminal: TerminalID = 3
    let office: TerminalID = 4
    /// The ledger's balance per account (`StoreUnderTest.balances`).
    var balances: @Sendable () async throws -> [String: Int] = { [:] }

    static func set(up store: any SettlementStore) async throws -> Fixture {
        try await store.putTerminal(TerminalInfo(id: 3, merchant: "canteen", secret: Array(repeating: 1, count: 32)))
        try await store.putTerminal(TerminalInfo(id: 4, merchant: "office", secret: Array(repeating: 2, count: 32), loads: true))
        let account = try await store.openAccount(name: "Li Lei", initialBalance: 10_000, at: t0)
        let card = try await store.issueCard(serial: 1001, uid: "a1b2c3d4", accountID: account.id, at: t0)
        return Fixture(account: account, card: card)
    }
}

/// A record as a terminal uploads it; `done` fills the figures the card shows after it.
func record(_ kind: TransactionIntent.Kind, _ amount: Fen, before: Fen, counter: UInt16, outcome: RecordOutcome = .done, sequence: UInt32,
            terminal: TerminalID = 3, uid: String = "A1B2C3D4", at date: Date = Fixture.t0) -> TerminalRecord {
    let after = Ledger.expectedBalanceAfter(kind: kind, amount: amount, balanceBefore: before)
    return TerminalRecord(terminalID: terminal, terminalSequence: sequence, kind: kind, cardUID: uid, cardSerial: nil, amount: amount,
                          balanceBefore: before, counterBefore: counter, outcome: outcome,
                          balanceAfter: outcome == .done ? after : nil, counterAfter: outcome == .done ? counter &+ 1 : nil, createdAt: date)
}

/// Runs a call that must be refused with `code` and checks it wrote nothing.
func expectRefused(_ code: SettlementError.Code, by store: any SettlementStore, sourceLocation: SourceLocation = #_sourceLocation,
                   _ call: () async throws -> Void) async throws {
    let before = try await store.rowCounts()
    do {
        try await call()
        Issue.record("the call was not refused", sourceLocation: sourceLocation)
    } catch let error as SettlementError {
        #expect(error.code == code, "\(error.message)", sourceLocation: sourceLocation)
        #expect(!error.message.isEmpty, sourceLocation: sourceLocation)
    }
    #expect(try await store.rowCounts() == before, "a refused call wrote something", sourceLocation: sourceLocation)
}

extension SettlementStore {
    func flagCodes() async throws -> [String] { try await flags(limit: 1000).map(\.code) }
}
