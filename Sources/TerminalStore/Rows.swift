import CampusCard
import Foundation
import GRDB

// The ONLY place that maps `TransactionIntent` / `TransactionOutcome` to and from table columns. When the intent's
// fields change (amounts becoming `Fen`, `terminalID` a `TerminalID`), this file is the one to fix. Amounts are
// stored as integer fen; dates as REAL seconds since Foundation's reference date (2001-01-01 UTC), so that a `Date`
// round-trips bit for bit (an imported JSON line compares equal to the stored row).

/// The columns of `journalEntry` written from an intent, in `insertSQL`'s order.
struct IntentColumns {
    static let insertSQL = """
        INSERT INTO journalEntry (sequence, terminalID, kind, wallet, cardUID, cardSerial, amountFen, balanceBeforeFen,
                                  counterBefore, consumptionFen, referenceBefore, settlementReference, recordBefore, createdAt)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """

    /// The columns `decode` reads (a prefix of every SELECT of whole entries).
    static let selectList = """
        sequence, terminalID, kind, cardUID, cardSerial, amountFen, balanceBeforeFen, counterBefore, consumptionFen,
        referenceBefore, settlementReference, recordBefore, createdAt, outcome, balanceAfterFen, counterAfter, decidedAt,
        upload, sentAt, acknowledgedAt
        """

    static func arguments(_ intent: TransactionIntent) -> StatementArguments {
        [
            Int64(intent.terminalSequence), Int64(intent.terminalID.rawValue), intent.kind.rawValue, intent.isPurse ? "purse" : "water",
            intent.cardUID, intent.cardSerial.map { Int64($0) }, Int64(intent.amount.rawValue), Int64(intent.balanceBefore.rawValue),
            Int64(intent.counterBefore), intent.consumption.map { Int64($0.rawValue) }, intent.referenceBefore.map { Int64($0) },
            intent.settlementReference.map { Int64($0) }, intent.recordBefore, storedDate(intent.createdAt),
        ]
    }

    /// An entry from a row selected with `selectList`. Throws `.corrupt` for values no intent can hold (a row
    /// edited by hand, or a schema this code does not know): never traps on what is read from disk.
    static func decode(_ row: Row, path: String) throws -> StoredTransaction {
        func fail(_ what: String) -> TerminalStoreError {
            TerminalStoreError(.corrupt, "the terminal store \(path) holds an entry with \(what): keep the file for the card office, restore from backup or move it aside")
        }
        let sequence: Int64 = row["sequence"]
        /// An integer column that must fit `T` (nil stays nil).
        func fitting<T: FixedWidthInteger>(_ column: String, _ what: String) throws -> T? {
            guard let value = row[column] as Int64? else { return nil }
            guard let fitted = T(exactly: value) else { throw fail("\(what) \(value) at sequence \(sequence)") }
            return fitted
        }
        func required<T: FixedWidthInteger>(_ column: String, _ what: String) throws -> T {
            guard let value: T = try fitting(column, what) else { throw fail("no \(what) at sequence \(sequence)") }
            return value
        }
        guard let terminalSequence = UInt32(exactly: sequence) else { throw fail("sequence \(sequence)") }
        guard let kindName = row["kind"] as String?, let kind = TransactionIntent.Kind(rawValue: kindName) else {
            throw fail("an unknown kind at sequence \(sequence)")
        }
        guard let cardUID = row["cardUID"] as String?, let createdAt = row["createdAt"] as Double? else {
            throw fail("no card UID or creation time at sequence \(sequence)")
        }
        var intent = TransactionIntent(
            terminalID: TerminalID(try required("terminalID", "terminal id") as UInt16), terminalSequence: terminalSequence, kind: kind,
            cardUID: cardUID, cardSerial: try fitting("cardSerial", "card serial"),
            amount: Fen(try required("amountFen", "amount") as Int), balanceBefore: Fen(try required("balanceBeforeFen", "balance") as Int),
            counterBefore: try required("counterBefore", "card counter"),
            consumption: (try fitting("consumptionFen", "consumption") as Int?).map { Fen($0) },
            referenceBefore: try fitting("referenceBefore", "settlement reference"),
            settlementReference: try fitting("settlementReference", "settlement reference"),
            createdAt: date(createdAt))
        intent.recordBefore = row["recordBefore"]
        let outcome = try OutcomeColumns(kind: row["outcome"], balanceAfter: row["balanceAfterFen"], counterAfter: row["counterAfter"]).outcome(sequence: terminalSequence, path: path)
        guard let uploadName = row["upload"] as String?, let upload = UploadState(rawValue: uploadName) else { throw fail("an unknown upload state at sequence \(sequence)") }
        return StoredTransaction(intent: intent, outcome: outcome, upload: upload, decidedAt: (row["decidedAt"] as Double?).map(date),
                                 sentAt: (row["sentAt"] as Double?).map(date), acknowledgedAt: (row["acknowledgedAt"] as Double?).map(date))
    }
}

/// An outcome as the three columns `outcome`, `balanceAfterFen`, `counterAfter`.
struct OutcomeColumns: Equatable {
    var kind: String?
    var balanceAfter: Int64?
    var counterAfter: Int64?

    init(kind: String?, balanceAfter: Int64?, counterAfter: Int64?) {
        self.kind = kind
        self.balanceAfter = balanceAfter
        self.counterAfter = counterAfter
    }

    init(_ outcome: TransactionOutcome) {
        switch outcome {
        case .done(let balanceAfter, let counterAfter): self.init(kind: "done", balanceAfter: Int64(balanceAfter.rawValue), counterAfter: Int64(counterAfter))
        case .notDone: self.init(kind: "not-done", balanceAfter: nil, counterAfter: nil)
        case .undetermined: self.init(kind: "undetermined", balanceAfter: nil, counterAfter: nil)
        }
    }

    /// `nil` while open.
    func outcome(sequence: UInt32, path: String) throws -> TransactionOutcome? {
        switch kind {
        case nil: return nil
        case "done":
            guard let balanceAfter, let counterAfter, let counter = UInt16(exactly: counterAfter) else { break }
            return .done(balanceAfter: Fen(Int(balanceAfter)), counterAfter: counter)
        case "not-done": return .notDone
        case "undetermined": return .undetermined
        default: break
        }
        throw TerminalStoreError(.corrupt, "the terminal store \(path) holds an unreadable outcome at sequence \(sequence): keep the file for the card office, restore from backup or move it aside")
    }
}

/// Text for reports and CSV.
extension TransactionOutcome {
    var columnName: String { OutcomeColumns(self).kind ?? "open" }
}

/// The CSV export's columns: amounts as integer fen and as yuan text, dates in ISO 8601 (UTC).
enum CSVColumns {
    static let header = [
        "sequence", "terminal_id", "kind", "card_uid", "card_serial", "amount_fen", "amount_yuan", "balance_before_fen",
        "balance_before_yuan", "counter_before", "outcome", "balance_after_fen", "balance_after_yuan", "counter_after",
        "consumption_fen", "consumption_yuan", "reference_before", "settlement_reference", "created_at", "decided_at",
        "upload", "sent_at", "acknowledged_at", "record_before",
    ]

    static func fields(_ entry: StoredTransaction) -> [String] {
        let intent = entry.intent
        let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        func text(_ date: Date?) -> String { date.map { style.format($0) } ?? "" }
        func fen(_ value: Fen?) -> [String] { value.map { [String($0.rawValue), $0.yuan] } ?? ["", ""] }
        var balanceAfter: Fen?, counterAfter: UInt16?
        if case .done(let balance, let counter)? = entry.outcome { (balanceAfter, counterAfter) = (balance, counter) }
        let head: [String] = [String(intent.terminalSequence), String(intent.terminalID.rawValue), intent.kind.rawValue, intent.cardUID,
                              intent.cardSerial.map { String($0) } ?? ""]
        let money: [String] = fen(intent.amount) + fen(intent.balanceBefore)
        let outcome: [String] = [String(intent.counterBefore), entry.outcome?.columnName ?? "open"] + fen(balanceAfter)
            + [counterAfter.map { String($0) } ?? ""]
        let tail: [String] = [intent.referenceBefore.map { String($0) } ?? "", intent.settlementReference.map { String($0) } ?? "",
                              text(intent.createdAt), text(entry.decidedAt), entry.upload.rawValue, text(entry.sentAt),
                              text(entry.acknowledgedAt), intent.recordBefore ?? ""]
        return head + money + outcome + fen(intent.consumption) + tail
    }
}

/// One line of FileTerminalJournal's JSON-lines format: an intent, or a sequence with its outcome.
struct JournalLine: Codable {
    var intent: TransactionIntent?
    var sequence: UInt32?
    var outcome: TransactionOutcome?
}

func storedDate(_ date: Date) -> Double { date.timeIntervalSinceReferenceDate }
func date(_ stored: Double) -> Date { Date(timeIntervalSinceReferenceDate: stored) }
