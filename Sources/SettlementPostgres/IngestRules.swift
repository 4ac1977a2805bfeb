import CampusCard
import Foundation
import SettlementCore

/// The per-card state the ledger rules keep between batches (stored as JSON in `card_state`).
struct CardLedgerState: Codable, Sendable, Hashable {
    struct Window: Codable, Sendable, Hashable {
        var highest: UInt16?
        var seen: [UInt16] = []
    }
    var purse = Window()
    var water = Window()
}

/// PROVISIONAL: the store-side decision until SettlementCore's `Ledger` (branch settle-store) lands; then ingest calls
/// the Ledger and this file goes. It applies the figure check, suspense, not-done, pending and the counter window.
enum IngestRules {
    struct Decision {
        var booking: RecordAck.Booking
        var flags: [String] = []
        var movements: [Movement] = []
        var flagRows: [FlagRow] = []
        var purseMirror: (Fen, UInt16)?
    }

    static let window = 64

    /// The business day (UTC+8) of a record.
    static func businessDay(_ date: Date) -> String {
        let seconds = Int64(date.timeIntervalSince1970) + 8 * 3_600
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        // Civil from days (H. Hinnant's algorithm): no calendar, no time zone database.
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        func two(_ value: Int64) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(year)-\(two(month))-\(two(day))"
    }

    static func decide(_ record: TerminalRecord, card: Card?, merchant: String, state: inout CardLedgerState) -> Decision {
        let terminal = Int64(record.terminalID.rawValue)
        let sequence = Int64(record.terminalSequence)
        func flagged(_ code: String, _ message: String) -> Decision {
            Decision(booking: .flagged, flags: [code], flagRows: [FlagRow(code: code, terminal: terminal, sequence: sequence,
                                                                         cardSerial: card.map { Int64($0.serial) }, message: message)])
        }
        switch record.outcome {
        case .notDone: return Decision(booking: .nothing)
        case .undetermined: return Decision(booking: .pending)
        case .done: break
        }
        guard let after = record.balanceAfter, let counter = record.counterAfter else {
            return flagged("amount-mismatch", "record \(sequence) of terminal \(terminal) is done without the balance and counter after it")
        }
        let debit: Bool
        switch record.kind {
        case .purseDebit, .waterDebit, .waterRefund: debit = true
        case .purseLoad, .purseSubsidy, .waterSettle, .waterReset: debit = false
        }
        let expected = debit ? record.balanceBefore - record.amount : record.balanceBefore + record.amount
        if record.kind != .waterReset, expected != after {
            return flagged("amount-mismatch", "record \(sequence) of terminal \(terminal): \(record.balanceBefore) \(debit ? "-" : "+") \(record.amount) is not \(after)")
        }
        let water = [.waterDebit, .waterSettle, .waterRefund, .waterReset].contains(record.kind)
        var window = water ? state.water : state.purse
        var flags: [String] = []
        if window.seen.contains(counter) {
            return flagged("counter-repeat", "card \(record.cardUID): counter \(counter) seen before (record \(sequence) of terminal \(terminal))")
        }
        if let highest = window.highest, !PostgresSettlementStore.isAfter(counter, highest),
           Int(highest &- counter) >= Self.window {
            return flagged("counter-stale", "card \(record.cardUID): counter \(counter) is older than the window (highest \(highest))")
        }
        if let highest = window.highest, PostgresSettlementStore.isAfter(counter, highest), counter != highest &+ 1 {
            flags.append("counter-gap")
        }
        if PostgresSettlementStore.isAfter(counter, window.highest) { window.highest = counter }
        window.seen.append(counter)
        if window.seen.count > Self.window { window.seen.removeFirst(window.seen.count - Self.window) }
        if water { state.water = window } else { state.purse = window }

        let serial = card.map { "\($0.serial)" } ?? record.cardUID
        let purse = "purse:\(serial)", waterAccount = "water:\(serial)"
        let suspense = card == nil || card?.status == .cancelled
        let day = businessDay(record.createdAt)
        var movement: Movement
        switch record.kind {
        case .purseDebit:
            movement = Movement(debit: purse, credit: suspense ? "suspense" : "merchant:\(merchant)", amount: record.amount.rawValue,
                                kind: record.kind.rawValue, terminal: terminal, sequence: sequence,
                                merchant: suspense ? nil : merchant, day: suspense ? nil : day)
        case .waterDebit:
            movement = Movement(debit: waterAccount, credit: suspense ? "suspense" : "merchant:\(merchant)",
                                amount: record.amount.rawValue, kind: record.kind.rawValue, terminal: terminal,
                                sequence: sequence, merchant: suspense ? nil : merchant, day: suspense ? nil : day)
        case .purseLoad:
            movement = Movement(debit: "cash", credit: purse, amount: record.amount.rawValue, kind: record.kind.rawValue,
                                terminal: terminal, sequence: sequence)
        case .purseSubsidy:
            movement = Movement(debit: "subsidy", credit: purse, amount: record.amount.rawValue, kind: record.kind.rawValue,
                                terminal: terminal, sequence: sequence)
        case .waterSettle:
            movement = Movement(debit: card.map { "account:\($0.accountID)" } ?? "suspense", credit: waterAccount,
                                amount: record.amount.rawValue, kind: record.kind.rawValue, terminal: terminal, sequence: sequence)
        case .waterRefund:
            movement = Movement(debit: waterAccount, credit: card.map { "account:\($0.accountID)" } ?? "suspense",
                                amount: record.amount.rawValue, kind: record.kind.rawValue, terminal: terminal, sequence: sequence)
        case .waterReset:
            movement = Movement(debit: "water-reset", credit: waterAccount, amount: record.amount.rawValue,
                                kind: record.kind.rawValue, terminal: terminal, sequence: sequence)
        }
        var decision = Decision(booking: suspense ? .suspense : .booked, flags: flags, movements: [movement])
        if record.kind == .waterReset {
            decision.flagRows.append(FlagRow(code: "water-reset", terminal: terminal, sequence: sequence,
                                             cardSerial: card.map { Int64($0.serial) },
                                             message: "card \(record.cardUID): water wallet reset; the balance found (\(record.balanceBefore)) was unverified"))
        }
        if !water { decision.purseMirror = (after, counter) }
        return decision
    }
}
