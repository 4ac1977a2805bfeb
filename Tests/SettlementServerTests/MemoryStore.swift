import CampusCard
import Foundation
import SettlementCore

/// A stand-in store for tests that need no database (the spec-vs-router check): keeps the protocol's
/// idempotence, nonce and blacklist contracts, no ledger rules (every done record is `booked`).
actor MemoryStore: SettlementStore {
    private var terminals: [TerminalID: TerminalInfo] = [:]
    private var nonces: Set<String> = []
    private var records: [String: (digest: String, ack: RecordAck)] = [:]
    private var accounts: [Int64: Account] = [:]
    private var cards: [UInt32: Card] = [:]
    private var feed: [BlacklistDelta] = []
    private var loads: [String: LoadState] = [:]
    private var flagList: [OperatorFlag] = []
    private var parametersByTerminal: [TerminalID: TerminalParameters] = [:]

    func putTerminal(_ terminal: TerminalInfo) { terminals[terminal.id] = terminal }
    func addTerminal(_ terminal: TerminalInfo) throws {
        guard terminals[terminal.id] == nil else { throw SettlementError(.conflict, "terminal \(terminal.id) is already registered") }
        terminals[terminal.id] = terminal
    }
    func terminal(_ id: TerminalID) -> TerminalInfo? { terminals[id] }
    func changeTerminal(_ id: TerminalID, enabled: Bool?, loads: Bool?) -> TerminalInfo? {
        terminals[id]?.enabled = enabled ?? terminals[id]?.enabled ?? false
        terminals[id]?.loads = loads ?? terminals[id]?.loads ?? false
        return terminals[id]
    }
    func rememberNonce(terminal: TerminalID, nonce: String, at date: Date) -> Bool { nonces.insert("\(terminal):\(nonce)").inserted }

    func ingest(_ batch: [TerminalRecord], from terminal: TerminalID, at date: Date) throws -> [RecordAck] {
        guard batch.allSatisfy({ $0.terminalID == terminal }) else { throw SettlementError(.badRequest, "foreign record") }
        return batch.map { record in
            let key = "\(record.terminalID):\(record.terminalSequence)"
            if let stored = records[key] {
                if stored.digest == record.contentDigest {
                    var ack = stored.ack
                    ack.status = .duplicate
                    return ack
                }
                flagList.append(OperatorFlag(id: Int64(flagList.count + 1), code: "content-conflict", terminalID: terminal,
                                             terminalSequence: record.terminalSequence, cardSerial: nil, message: "conflict", raisedAt: date))
                return RecordAck(terminalSequence: record.terminalSequence, status: .conflict, booking: .nothing, flags: ["content-conflict"], receivedAt: stored.ack.receivedAt)
            }
            let ack = RecordAck(terminalSequence: record.terminalSequence, status: .accepted, booking: record.outcome == .done ? .booked : .nothing, receivedAt: date)
            records[key] = (record.contentDigest, ack)
            return ack
        }
    }

    func openAccount(name: String, initialBalance: Fen, at date: Date) -> Account {
        let account = Account(id: Int64(accounts.count + 1), name: name, balance: initialBalance, createdAt: date)
        accounts[account.id] = account
        return account
    }

    func account(_ id: Int64) -> Account? { accounts[id] }

    func issueCard(serial: UInt32, uid: String, accountID: Int64, at date: Date) throws -> Card {
        guard accounts[accountID] != nil else { throw SettlementError(.notFound, "no account") }
        guard cards[serial] == nil, !cards.values.contains(where: { $0.uid == uid }) else { throw SettlementError(.conflict, "issued") }
        let card = Card(serial: serial, uid: uid, accountID: accountID, status: .active, purseMirror: 0, purseCounter: nil, issuedAt: date)
        cards[serial] = card
        return card
    }

    func card(serial: UInt32) -> Card? { cards[serial] }
    func card(uid: String) -> Card? { cards.values.first { $0.uid == uid } }

    func setCardStatus(serial: UInt32, to status: CardStatus, reason: String, at date: Date) throws -> (Card, Int64) {
        guard var card = cards[serial] else { throw SettlementError(.notFound, "no card") }
        card.status = status
        cards[serial] = card
        let version = Int64(feed.count + 1)
        feed.append(BlacklistDelta(version: version, serial: serial, uid: card.uid, action: status.isBlacklisted ? .add : .remove, reason: reason))
        return (card, version)
    }

    func blacklist(after version: Int64, limit: Int) -> BlacklistPage {
        let changes = Array(feed.filter { $0.version > version }.prefix(limit))
        return BlacklistPage(changes: changes, version: changes.last?.version ?? max(version, 0),
                             more: feed.contains { $0.version > (changes.last?.version ?? version) })
    }

    func parameters(for terminal: TerminalID) -> TerminalParameters { parametersByTerminal[terminal] ?? TerminalParameters(version: 1) }
    func setParameters(_ parameters: TerminalParameters, for terminal: TerminalID?) -> TerminalParameters {
        if let terminal { parametersByTerminal[terminal] = parameters }
        return parameters
    }

    func prepareLoad(reference: String, terminal: TerminalID, cardSerial: UInt32, amount: Fen, balanceBefore: Fen,
                     counterBefore: UInt16, at date: Date) throws -> LoadState {
        guard cards[cardSerial] != nil else { throw SettlementError(.notFound, "no card") }
        let load = LoadState(reference: reference, terminalID: terminal, cardSerial: cardSerial, amount: amount,
                             balanceBefore: balanceBefore, counterBefore: counterBefore, phase: .prepared, updatedAt: date)
        if let stored = loads[reference] {
            var same = stored
            same.phase = .prepared
            same.updatedAt = date
            guard same == load else { throw SettlementError(.conflict, "another prepare") }
            return stored
        }
        loads[reference] = load
        return load
    }

    func confirmLoad(reference: String, balanceAfter: Fen, counterAfter: UInt16, at date: Date) throws -> LoadState {
        try move(reference, to: .confirmed, refusedAfter: .reversed, at: date)
    }

    func settleDisputedLoad(reference: String, credited: Bool, reason: String, at date: Date) throws -> LoadState {
        guard let load = loads[reference] else { throw SettlementError(.notFound, "no load \(reference)") }
        if let refusal = Ledger.settlementRefusal(load, credited: credited) { throw refusal }
        return try move(reference, to: credited ? .confirmed : .reversed, refusedAfter: credited ? .reversed : .confirmed, at: date)
    }

    func loadReferences(among references: [String]) -> Set<String> { Set(references.filter { loads[$0] != nil }) }

    func reverseLoad(reference: String, at date: Date) throws -> LoadState {
        try move(reference, to: .reversed, refusedAfter: .confirmed, at: date)
    }

    private func move(_ reference: String, to phase: LoadState.Phase, refusedAfter other: LoadState.Phase, at date: Date) throws -> LoadState {
        guard var load = loads[reference] else { throw SettlementError(.notFound, "no load \(reference)") }
        if load.phase == phase { return load }
        guard load.phase != other else { throw SettlementError(.conflict, "load is \(other.rawValue)") }
        load.phase = phase
        load.updatedAt = date
        loads[reference] = load
        return load
    }

    func dailyTotals(day: String) -> [DailyTotal] { [] }
    func statement(cardSerial: UInt32) -> [LedgerEntry] { [] }
    func flags(limit: Int) -> [OperatorFlag] { Array(flagList.suffix(limit).reversed()) }
    func ledgerImbalance() -> Fen { .zero }
    func rowCounts() -> [String: Int] { ["records": records.count, "accounts": accounts.count, "cards": cards.count] }
}
