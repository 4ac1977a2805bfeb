import CampusCard
import Foundation
import PostgresNIO
import SettlementCore

/// Online load (圈存) in two phases, idempotent on the reference. Prepare moves the amount from the holder's account to
/// `pending-load` (the account's balance drops at once: it cannot be spent twice); confirm moves it from `pending-load` to
/// the card's purse; reverse gives it back to the account.
extension PostgresSettlementStore {
    public func prepareLoad(reference: String, terminal: TerminalID, cardSerial: UInt32, amount: Fen, balanceBefore: Fen,
                            counterBefore: UInt16, at date: Date) async throws -> LoadState {
        guard amount.rawValue > 0 else {
            throw SettlementError(.badRequest, "prepare load: the amount must be positive (got \(amount))")
        }
        guard !reference.isEmpty, reference.count <= 64 else {
            throw SettlementError(.badRequest, "prepare load: the reference must have 1 to 64 characters")
        }
        return try await transaction("prepare load") { connection in
            if let existing = try await Self.load(reference, on: connection, logger: logger) {
                guard existing.terminalID == terminal, existing.cardSerial == cardSerial, existing.amount == amount,
                      existing.balanceBefore == balanceBefore, existing.counterBefore == counterBefore
                else {
                    throw SettlementError(.conflict, "prepare load: reference \(reference) was used for another load: use a new reference")
                }
                return existing
            }
            let cards = try await connection.query(
                "SELECT account_id, status FROM cards WHERE serial = \(Int64(cardSerial))", logger: logger)
            var found: (Int64, String)?
            for try await row in cards.decode((Int64, String).self) { found = row }
            guard let found else {
                throw SettlementError(.notFound, "prepare load: no card with serial \(cardSerial): issue it first")
            }
            let (accountID, status) = found
            guard status == CardStatus.active.rawValue else {
                throw SettlementError(.conflict, "prepare load: card \(cardSerial) is \(status): loads go to active cards only")
            }
            let accounts = try await connection.query(
                "SELECT balance FROM accounts WHERE id = \(accountID) FOR UPDATE", logger: logger)
            var balance: Int64 = 0
            for try await value in accounts.decode(Int64.self) { balance = value }
            guard balance >= Int64(amount.rawValue) else {
                throw SettlementError(.conflict, "prepare load: account \(accountID) holds \(Fen(Int(balance))), less than \(amount): top up the account first")
            }
            try await connection.query("""
                INSERT INTO loads (reference, terminal_id, card_serial, amount, balance_before, counter_before, phase, updated_at)
                VALUES (\(reference), \(Int64(terminal.rawValue)), \(Int64(cardSerial)), \(Int64(amount.rawValue)),
                        \(Int64(balanceBefore.rawValue)), \(Int64(counterBefore)), 'prepared', \(date))
                """, logger: logger)
            try await Self.book(on: connection, logger: logger, movements: [
                Movement(debit: "account:\(accountID)", credit: "pending-load", amount: amount.rawValue, kind: "load-prepare",
                         terminal: Int64(terminal.rawValue), sequence: nil, merchant: nil, day: nil),
            ], at: date)
            return LoadState(reference: reference, terminalID: terminal, cardSerial: cardSerial, amount: amount,
                             balanceBefore: balanceBefore, counterBefore: counterBefore, phase: .prepared, updatedAt: date)
        }
    }

    public func confirmLoad(reference: String, balanceAfter: Fen, counterAfter: UInt16, at date: Date) async throws -> LoadState {
        try await transaction("confirm load") { connection in
            guard var load = try await Self.load(reference, on: connection, logger: logger) else {
                throw SettlementError(.notFound, "confirm load: no load \(reference): prepare it first")
            }
            switch load.phase {
            case .confirmed: return load
            case .reversed:
                throw SettlementError(.conflict, "confirm load: load \(reference) was reversed: prepare a new load")
            case .prepared: break
            }
            // The card's ledger state row first, as ingest locks it: the purse mirror is moved under the same lock.
            let cards = try await connection.query(
                "SELECT uid FROM cards WHERE serial = \(Int64(load.cardSerial))", logger: logger)
            var uid = ""
            for try await value in cards.decode(String.self) { uid = value }
            try await connection.query(
                "INSERT INTO card_state (card_uid) VALUES (\(uid)) ON CONFLICT DO NOTHING", logger: logger)
            try await connection.query(
                "SELECT 1 FROM card_state WHERE card_uid = \(uid) FOR UPDATE", logger: logger)
            try await connection.query("""
                UPDATE loads SET phase = 'confirmed', balance_after = \(Int64(balanceAfter.rawValue)),
                    counter_after = \(Int64(counterAfter)), updated_at = \(date) WHERE reference = \(reference)
                """, logger: logger)
            try await Self.book(on: connection, logger: logger, movements: [
                Movement(debit: "pending-load", credit: "purse:\(load.cardSerial)", amount: load.amount.rawValue,
                         kind: "load-confirm", terminal: Int64(load.terminalID.rawValue), sequence: nil, merchant: nil, day: nil),
            ], at: date)
            try await Self.moveMirror(on: connection, logger: logger,
                                      updates: [(Int64(load.cardSerial), Int64(balanceAfter.rawValue), counterAfter)])
            load.phase = .confirmed
            load.updatedAt = date
            return load
        }
    }

    public func reverseLoad(reference: String, at date: Date) async throws -> LoadState {
        try await transaction("reverse load") { connection in
            guard var load = try await Self.load(reference, on: connection, logger: logger) else {
                throw SettlementError(.notFound, "reverse load: no load \(reference): nothing to reverse")
            }
            switch load.phase {
            case .reversed: return load
            case .confirmed:
                throw SettlementError(.conflict, "reverse load: load \(reference) was confirmed (the card carries it): correct it with a new transaction")
            case .prepared: break
            }
            let cards = try await connection.query(
                "SELECT account_id FROM cards WHERE serial = \(Int64(load.cardSerial))", logger: logger)
            var accountID: Int64 = 0
            for try await value in cards.decode(Int64.self) { accountID = value }
            try await connection.query(
                "UPDATE loads SET phase = 'reversed', updated_at = \(date) WHERE reference = \(reference)", logger: logger)
            try await Self.book(on: connection, logger: logger, movements: [
                Movement(debit: "pending-load", credit: "account:\(accountID)", amount: load.amount.rawValue,
                         kind: "load-reverse", terminal: Int64(load.terminalID.rawValue), sequence: nil, merchant: nil, day: nil),
            ], at: date)
            load.phase = .reversed
            load.updatedAt = date
            return load
        }
    }

    /// The load with `reference`, its row locked for the transaction.
    static func load(_ reference: String, on connection: PostgresConnection, logger: Logger) async throws -> LoadState? {
        let rows = try await connection.query("""
            SELECT terminal_id, card_serial, amount, balance_before, counter_before, phase, updated_at FROM loads
            WHERE reference = \(reference) FOR UPDATE
            """, logger: logger)
        for try await (terminal, serial, amount, before, counter, phase, updated)
            in rows.decode((Int64, Int64, Int64, Int64, Int64, String, Date).self) {
            return LoadState(reference: reference, terminalID: TerminalID(UInt16(truncatingIfNeeded: terminal)),
                             cardSerial: UInt32(truncatingIfNeeded: serial), amount: Fen(Int(amount)),
                             balanceBefore: Fen(Int(before)), counterBefore: UInt16(truncatingIfNeeded: counter),
                             phase: LoadState.Phase(rawValue: phase) ?? .prepared, updatedAt: updated)
        }
        return nil
    }

    /// Moves purse mirrors forward only: a card's mirror takes a (balance, counter) whose counter is after the one it
    /// holds (16-bit, wrapping), in one statement for many cards. The caller holds the cards' state locks.
    static func moveMirror(on connection: PostgresConnection, logger: Logger,
                           updates: [(serial: Int64, balance: Int64, counter: UInt16)]) async throws {
        guard !updates.isEmpty else { return }
        // ((new - old) mod 2^16) in 1...32767: after. Written in SQL so the comparison sees the row's current value.
        try await connection.query("""
            UPDATE cards SET purse_mirror = u.balance, purse_counter = u.counter
            FROM unnest(\(updates.map(\.serial)), \(updates.map(\.balance)), \(updates.map { Int64($0.counter) }))
                AS u(serial, balance, counter)
            WHERE cards.serial = u.serial
              AND (cards.purse_counter IS NULL OR ((u.counter - cards.purse_counter + 65536) % 65536) BETWEEN 1 AND 32767)
            """, logger: logger)
    }
}
