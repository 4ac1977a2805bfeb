import CampusCard
import Foundation
import PostgresNIO
import SettlementCore

/// Online load (圈存) in two phases, idempotent on the reference. Prepare moves the amount from the holder's account to
/// `pending-load` (the account's balance drops at once: it cannot be spent twice); confirm moves it on to the card's
/// purse (or, when an uploaded purse-load record of the same counter booked it already, to where that record took it
/// from: `suspense` for the load's own record, `cash` for an office load); reverse gives it back. A confirmation whose
/// card balance disagrees disputes the load (one `load-mismatch` flag, the hold stays) and is refused.
extension PostgresSettlementStore {
    public func prepareLoad(reference: String, terminal: TerminalID, cardSerial: UInt32, amount: Fen, balanceBefore: Fen,
                            counterBefore: UInt16, at date: Date) async throws -> LoadState {
        guard (1...64).contains(reference.count) else { throw SettlementError(.badRequest, "a load reference has 1–64 characters") }
        guard amount > .zero else { throw SettlementError(.badRequest, "a load's amount must be positive, not \(amount)") }
        guard balanceBefore >= .zero, balanceBefore.rawValue + amount.rawValue <= Fen.cardMaximum.rawValue else {
            throw SettlementError(.badRequest, "the card's balance \(balanceBefore) plus \(amount) is not a balance a card can hold")
        }
        return try await transaction("prepare load") { connection in
            if let existing = try await Self.load(reference, on: connection, logger: self.logger) {
                guard existing.state.terminalID == terminal, existing.state.cardSerial == cardSerial, existing.state.amount == amount,
                      existing.state.balanceBefore == balanceBefore, existing.state.counterBefore == counterBefore
                else {
                    throw SettlementError(.conflict, "load \(reference) was prepared with other figures: use a new reference for a new load")
                }
                return existing.state
            }
            guard try await Self.exists("SELECT 1 FROM terminals WHERE id = \(Int64(terminal.rawValue))", on: connection, logger: self.logger) else {
                throw SettlementError(.notFound, "terminal \(terminal) is not registered")
            }
            guard let card = try await Self.card(on: connection.query("""
                SELECT \(unescaped: Self.cardColumns) FROM cards c LEFT JOIN card_books b ON b.uid = c.uid
                WHERE c.serial = \(Int64(cardSerial))
                """, logger: self.logger))
            else {
                throw SettlementError(.notFound, "card \(cardSerial) is not issued")
            }
            guard card.status == .active else {
                throw SettlementError(.conflict, "card \(cardSerial) is \(card.status.rawValue): no load; send the holder to the card office")
            }
            let accounts = try await connection.query(
                "SELECT balance FROM accounts WHERE id = \(card.accountID) FOR UPDATE", logger: self.logger)
            var balance: Int64 = 0
            for try await value in accounts.decode(Int64.self) { balance = value }
            // After the account's lock: a concurrent prepare for the same card waits there, then sees this one.
            let others = try await connection.query("""
                SELECT reference FROM loads
                WHERE card_serial = \(Int64(cardSerial)) AND counter_before = \(Int64(counterBefore)) AND phase <> 'reversed' LIMIT 1
                """, logger: self.logger)
            for try await _ in others.decode(String.self) {
                throw SettlementError(.conflict, Ledger.anotherLoadAtCounter(cardSerial: cardSerial, counter: counterBefore))
            }
            guard balance >= Int64(amount.rawValue) else {
                throw SettlementError(.conflict, "account \(card.accountID) holds \(Fen(Int(balance))), less than the load of \(amount): top the account up first")
            }
            try await connection.query("""
                INSERT INTO loads (reference, terminal_id, card_serial, account_id, amount, balance_before, counter_before, phase,
                                   updated_at)
                VALUES (\(reference), \(Int64(terminal.rawValue)), \(Int64(cardSerial)), \(card.accountID), \(Int64(amount.rawValue)),
                        \(Int64(balanceBefore.rawValue)), \(Int64(counterBefore)), 'prepared', \(date))
                """, logger: self.logger)
            try await Self.post([Movement(from: Ledger.holderAccount(card.accountID), to: Ledger.pendingLoad, amount: amount,
                                          kind: "load-hold", terminalID: terminal, terminalSequence: nil,
                                          day: Ledger.businessDay(of: date), cardSerial: nil, cardSide: .neither, merchant: nil)],
                                on: connection, logger: self.logger, at: date)
            return LoadState(reference: reference, terminalID: terminal, cardSerial: cardSerial, amount: amount,
                             balanceBefore: balanceBefore, counterBefore: counterBefore, phase: .prepared, updatedAt: date)
        }
    }

    public func confirmLoad(reference: String, balanceAfter: Fen, counterAfter: UInt16, at date: Date) async throws -> LoadState {
        // A confirmation whose figures disagree is refused, but what it found is kept (the load disputed, a flag): the
        // body returns the refusal instead of throwing it, so the transaction commits.
        let outcome = try await transaction("confirm load") { connection -> LoadOutcome in
            guard let found = try await Self.load(reference, on: connection, logger: self.logger) else {
                throw SettlementError(.notFound, "load \(reference) was never prepared")
            }
            var load = found.state
            switch load.phase {
            case .reversed:
                throw SettlementError(.conflict, "load \(reference) was reversed: it cannot be confirmed; prepare a new load")
            case .disputed:
                throw SettlementError(.conflict, "load \(reference) is disputed (the card showed \(found.balanceAfter.map { "\(Fen(Int($0)))" } ?? "?") at counter \(found.counterAfter.map { "\($0)" } ?? "?"), not \(load.balanceBefore + load.amount)): an operator settles it; nothing more to do at the terminal")
            case .confirmed:
                guard found.balanceAfter == Int64(balanceAfter.rawValue), found.counterAfter == Int64(counterAfter) else {
                    throw SettlementError(.conflict, "load \(reference) was confirmed with other figures: check the card")
                }
                return .done(load)
            case .prepared:
                break
            }
            guard load.balanceBefore + load.amount == balanceAfter else {
                // Disputed once: the hold stays in pending-load, an operator is told (a retried confirmation finds the
                // load disputed, under the row lock, and adds nothing).
                try await Self.raise([Ledger.loadMismatchFlag(load, accountID: found.accountID, balanceAfter: balanceAfter, counterAfter: counterAfter)],
                                     on: connection, logger: self.logger, at: date)
                try await connection.query("""
                    UPDATE loads SET phase = 'disputed', balance_after = \(Int64(balanceAfter.rawValue)),
                        counter_after = \(Int64(counterAfter)), updated_at = \(date) WHERE reference = \(reference)
                    """, logger: self.logger)
                return .refused(SettlementError(.conflict, "load \(reference): the card shows \(balanceAfter), not \(load.balanceBefore) + \(load.amount): the load is disputed and an operator was flagged; the hold stays until the card office settles it"))
            }
            _ = try await Self.bookCarriedLoad(load, balanceAfter: balanceAfter, counterAfter: counterAfter, settled: false,
                                               on: connection, logger: self.logger, at: date)
            load.phase = .confirmed
            load.updatedAt = date
            return .done(load)
        }
        switch outcome {
        case let .done(load): return load
        case let .refused(error): throw error
        }
    }

    /// Books a load the card carries, showing `balanceAfter` at `counterAfter`: the card book's link, window and mirror
    /// (under the lock ingest takes), the hold out of `pending-load`, the phase `confirmed`. Returns the account the
    /// hold went to.
    static func bookCarriedLoad(_ load: LoadState, balanceAfter: Fen, counterAfter: UInt16, settled: Bool,
                                on connection: PostgresConnection, logger: Logger, at date: Date) async throws -> String {
        let reference = load.reference
        let uids = try await connection.query("SELECT uid FROM cards WHERE serial = \(Int64(load.cardSerial))", logger: logger)
        var uid: String?
        for try await value in uids.decode(String.self) { uid = value }
        guard let uid else {
            throw SettlementError(.storage, "load \(reference)'s card \(load.cardSerial) vanished from the store")
        }
        var books = try await lockBooks([uid], on: connection, logger: logger)
        guard var book = books[uid], let card = book.card else {
            throw SettlementError(.storage, "load \(reference)'s card \(load.cardSerial) has no book")
        }
        let already = Ledger.confirmOnlineLoad(reference: reference, amount: load.amount, balanceAfter: balanceAfter,
                                               counterAfter: counterAfter, in: &book)
        books[uid] = book
        try await saveBooks([book], on: connection, logger: logger)
        // An uploaded purse-load record of this counter booked it already: take the hold to where that record took
        // the money from (suspense for the load's own record, cash for an office load), never to the purse. A
        // settlement also follows the load's own record booked from suspense at another counter (the dispute's).
        let source = already || settled ? try await linkedSource(reference, on: connection, logger: logger) : Ledger.cash
        let linked = already || (settled && source == Ledger.suspense)
        let to = linked ? source : Ledger.purseAccount(card.serial)
        try await post([Ledger.loadConfirmation(load, serial: card.serial, to: to, linked: linked, settled: settled, at: date)],
                       on: connection, logger: logger, at: date)
        try await connection.query("""
            UPDATE loads SET phase = 'confirmed', balance_after = \(Int64(balanceAfter.rawValue)),
                counter_after = \(Int64(counterAfter)), updated_at = \(date) WHERE reference = \(reference)
            """, logger: logger)
        return to
    }

    public func settleDisputedLoad(reference: String, credited: Bool, reason: String, at date: Date) async throws -> LoadState {
        try await transaction("settle load") { connection in
            guard let found = try await Self.load(reference, on: connection, logger: self.logger) else {
                throw SettlementError(.notFound, "load \(reference) was never prepared: copy the reference from its load-mismatch flag")
            }
            var load = found.state
            if let refusal = Ledger.settlementRefusal(load, credited: credited) { throw refusal }
            guard load.phase == .disputed else { return load }
            let to: String
            if credited {
                guard let after = found.balanceAfter, let counter = found.counterAfter else {
                    throw SettlementError(.storage, "disputed load \(reference) has no figures of its confirmation")
                }
                to = try await Self.bookCarriedLoad(load, balanceAfter: Fen(Int(after)), counterAfter: UInt16(truncatingIfNeeded: counter),
                                                    settled: true, on: connection, logger: self.logger, at: date)
                load.phase = .confirmed
            } else {
                if try await Self.linkedSource(reference, on: connection, logger: self.logger) == Ledger.suspense {
                    throw SettlementError(.conflict, Ledger.ownRecordCarriesLoad(load))
                }
                to = Ledger.holderAccount(found.accountID)
                try await Self.post([Ledger.loadRelease(load, accountID: found.accountID, settled: true, at: date)],
                                    on: connection, logger: self.logger, at: date)
                try await connection.query(
                    "UPDATE loads SET phase = 'reversed', updated_at = \(date) WHERE reference = \(reference)", logger: self.logger)
                load.phase = .reversed
            }
            try await Self.raise([Ledger.loadSettledFlag(load, credited: credited, to: to, reason: reason)],
                                 on: connection, logger: self.logger, at: date)
            load.updatedAt = date
            return load
        }
    }

    /// Where the uploaded record of the load `reference` took its money from: `suspense` when that record (the load's
    /// own, booked before the confirmation) was booked to suspense, else `cash` (an office load at the same counter).
    static func linkedSource(_ reference: String, on connection: PostgresConnection, logger: Logger) async throws -> String {
        guard let key = OnlineLoadReference.record(named: reference) else { return Ledger.cash }
        let rows = try await connection.query(
            "SELECT booking, decided FROM records WHERE terminal_id = \(Int64(key.terminal.rawValue)) AND seq = \(Int64(key.sequence))",
            logger: logger)
        var source = Ledger.cash
        for try await (booking, decided) in rows.decode((String, String?).self) {
            let suspense = RecordAck.Booking.suspense.rawValue
            if booking == suspense || decided?.hasPrefix(suspense) == true { source = Ledger.suspense }
        }
        return source
    }

    /// The phases of the loads `references` name, in one query.
    static func loadPhases(_ references: [String], on connection: PostgresConnection, logger: Logger) async throws -> OnlineLoadPhases {
        guard !references.isEmpty else { return [:] }
        var phases: OnlineLoadPhases = [:]
        let rows = try await connection.query("SELECT reference, phase FROM loads WHERE reference = ANY(\(references))", logger: logger)
        for try await (reference, phase) in rows.decode((String, String).self) {
            guard let parsed = LoadState.Phase(rawValue: phase) else {
                throw SettlementError(.storage, "load \(reference) has the unknown phase \(phase)")
            }
            phases[reference] = parsed
        }
        return phases
    }

    /// The stations among `terminals` (`TerminalInfo.loads`), in one query.
    static func loaders(among terminals: [TerminalID], on connection: PostgresConnection, logger: Logger) async throws -> Set<TerminalID> {
        guard !terminals.isEmpty else { return [] }
        var loaders = Set<TerminalID>()
        let ids = terminals.map { Int64($0.rawValue) }
        for try await id in try await connection.query("SELECT id FROM terminals WHERE loads AND id = ANY(\(ids))", logger: logger).decode(Int64.self) {
            loaders.insert(TerminalID(UInt16(truncatingIfNeeded: id)))
        }
        return loaders
    }

    public func loadReferences(among references: [String]) async throws -> Set<String> {
        guard !references.isEmpty else { return [] }
        return try await read("load references") { client in
            var found = Set<String>()
            for try await reference in try await client.query("SELECT reference FROM loads WHERE reference = ANY(\(references))", logger: self.logger).decode(String.self) {
                found.insert(reference)
            }
            return found
        }
    }

    public func reverseLoad(reference: String, at date: Date) async throws -> LoadState {
        try await transaction("reverse load") { connection in
            guard let found = try await Self.load(reference, on: connection, logger: self.logger) else {
                throw SettlementError(.notFound, "load \(reference) was never prepared")
            }
            var load = found.state
            switch load.phase {
            case .confirmed:
                throw SettlementError(.conflict, "load \(reference) was confirmed: the card carries it; it cannot be reversed")
            case .disputed:
                throw SettlementError(.conflict, "load \(reference) is disputed (its confirmation showed other figures): an operator settles it; nothing more to do at the terminal")
            case .reversed: return load
            case .prepared: break
            }
            try await Self.post([Ledger.loadRelease(load, accountID: found.accountID, settled: false, at: date)],
                                on: connection, logger: self.logger, at: date)
            try await connection.query(
                "UPDATE loads SET phase = 'reversed', updated_at = \(date) WHERE reference = \(reference)", logger: self.logger)
            load.phase = .reversed
            load.updatedAt = date
            return load
        }
    }

    struct StoredLoad {
        var state: LoadState
        var accountID: Int64
        var balanceAfter: Int64?
        var counterAfter: Int64?
    }

    /// The load with `reference`, its row locked for the transaction.
    static func load(_ reference: String, on connection: PostgresConnection, logger: Logger) async throws -> StoredLoad? {
        let rows = try await connection.query("""
            SELECT terminal_id, card_serial, account_id, amount, balance_before, counter_before, phase, updated_at,
                   balance_after, counter_after
            FROM loads WHERE reference = \(reference) FOR UPDATE
            """, logger: logger)
        for try await (terminal, serial, account, amount, before, counter, phase, updated, after, counterAfter)
            in rows.decode((Int64, Int64, Int64, Int64, Int64, Int64, String, Date, Int64?, Int64?).self) {
            guard let phase = LoadState.Phase(rawValue: phase) else {
                throw SettlementError(.storage, "load \(reference) has the unknown phase \(phase)")
            }
            let state = LoadState(reference: reference, terminalID: TerminalID(UInt16(truncatingIfNeeded: terminal)),
                                  cardSerial: UInt32(truncatingIfNeeded: serial), amount: Fen(Int(amount)),
                                  balanceBefore: Fen(Int(before)), counterBefore: UInt16(truncatingIfNeeded: counter),
                                  phase: phase, updatedAt: updated)
            return StoredLoad(state: state, accountID: account, balanceAfter: after, counterAfter: counterAfter)
        }
        return nil
    }

    /// Whether a query returns a row.
    static func exists(_ query: PostgresQuery, on connection: PostgresConnection, logger: Logger) async throws -> Bool {
        let rows = try await connection.query(query, logger: logger)
        var found = false
        for try await _ in rows { found = true }
        return found
    }
}
