import CampusCard
import Foundation
import NIOCore
import SettlementCore
import StrictJSON

// The JSON the API speaks (docs/settlement-api.yaml): money in integer fen, times in Unix seconds. Requests are
// decoded into loose wire values, then every field is checked here, by hand, with a one-line message naming it.

/// Decodes a request body into `T`; any decoding failure is a 400 naming the field.
func decodeBody<T: Decodable>(_ type: T.Type, from body: ByteBuffer, emptyIs empty: T? = nil) throws -> T {
    if body.readableBytes == 0 {
        if let empty { return empty }
        throw APIError.badRequest("the request has no body: send a JSON object (docs/settlement-api.yaml)")
    }
    // Before the decoder: it takes a key given twice (one of them), `1e3` for a count and UTF-16 without a word.
    switch StrictJSON.check(body.readableBytesView, wholeNumbersOnly: true) {
    case .clean: break
    case let .problem(problem): throw APIError.badRequest(problem)
    case .notJSON: throw APIError.badRequest("the body is not valid JSON in UTF-8 (without a byte-order mark): send a JSON object (docs/settlement-api.yaml)")
    }
    do {
        return try JSONDecoder().decode(T.self, from: Data(body.readableBytesView))
    } catch let error as APIError {
        throw error
    } catch let error as DecodingError {
        throw APIError.badRequest(describe(error))
    } catch {
        throw APIError.badRequest("the body is not valid JSON: send a JSON object (docs/settlement-api.yaml)")
    }
}

private func pathText(_ path: [any CodingKey]) -> String {
    var text = ""
    for key in path {
        if let index = key.intValue {
            text += "[\(index)]"
        } else {
            text += (text.isEmpty ? "" : ".") + key.stringValue
        }
    }
    return text
}

private func describe(_ error: DecodingError) -> String {
    switch error {
    case let .keyNotFound(key, context):
        let field = pathText(context.codingPath + [key])
        return "\(field) is missing: it is required (docs/settlement-api.yaml)"
    case let .valueNotFound(_, context):
        let path = pathText(context.codingPath)
        return path.isEmpty ? "the body is null, not a JSON object: send one (docs/settlement-api.yaml)" : "\(path) is null: give a value or leave the field out"
    case let .typeMismatch(type, context):
        let path = pathText(context.codingPath)
        let expected = type == String.self ? "a string" : (type == Bool.self ? "a boolean" : (type is any BinaryInteger.Type ? "an integer" : "a JSON object or array as documented"))
        return path.isEmpty ? "the body is not a JSON object: send one (docs/settlement-api.yaml)" : "\(path) has the wrong type: expected \(expected)"
    case let .dataCorrupted(context):
        let path = pathText(context.codingPath)
        return path.isEmpty ? "the body is not valid JSON: send a JSON object (docs/settlement-api.yaml)"
            : "\(path) is not a whole number in range: see docs/settlement-api.yaml"
    @unknown default:
        return "the body does not match docs/settlement-api.yaml"
    }
}

extension KeyedDecodingContainer {
    /// A required integer field; a fraction, a string or an out-of-range number is a 400 naming the field.
    func int(_ key: Key) throws -> Int64 {
        do {
            return try decode(Int64.self, forKey: key)
        } catch {
            // Which of the three it was is asked only now: a batch's thousands of fields are read with one lookup each.
            guard contains(key) else { throw APIError.badRequest("\(pathText(codingPath + [key])) is missing: it is required (docs/settlement-api.yaml)") }
            if (try? decodeNil(forKey: key)) == true { throw APIError.badRequest("\(pathText(codingPath + [key])) is null: give a whole number") }
            // Whatever the decoder threw (its error for a fraction is not always a DecodingError), name the field.
            throw APIError.badRequest("\(pathText(codingPath + [key])) must be a whole number (no fraction, no quotes) in range: see docs/settlement-api.yaml")
        }
    }

    /// A required string field.
    func string(_ key: Key) throws -> String {
        try decode(String.self, forKey: key)
    }

    /// An optional integer field: absent is `nil`; `null` and anything but a whole number are refused.
    func optionalInt(_ key: Key) throws -> Int64? {
        guard contains(key) else { return nil }
        return try int(key)
    }

    /// An optional field: absent is `nil`, an explicit `null` is refused (the spec has no nullable request fields).
    func optional<T: Decodable>(_ type: T.Type, _ key: Key) throws -> T? {
        guard contains(key) else { return nil }
        if try decodeNil(forKey: key) {
            throw APIError.badRequest("\(pathText(codingPath + [key])) is null: give a value or leave the field out")
        }
        return try decode(T.self, forKey: key)
    }
}

/// Range and format checks shared by the routes; each throws a 400 naming the field.
/// Field names are autoclosures: a batch checks thousands of fields, and only a refused one needs its name.
enum Check {
    static let maxUnixTime: Int64 = 4_102_444_800
    static let maxSafeInteger: Int64 = 9_007_199_254_740_991

    static func range<T: BinaryInteger>(_ value: Int64, _ field: @autoclosure () -> String, _ bounds: ClosedRange<Int64>, as: T.Type) throws -> T {
        T(try range(value, field(), bounds))
    }

    static func range(_ value: Int64, _ field: @autoclosure () -> String, _ bounds: ClosedRange<Int64>) throws -> Int64 {
        guard bounds.contains(value) else {
            throw APIError.badRequest("\(field()) is \(value): it must be \(bounds.lowerBound)…\(bounds.upperBound)")
        }
        return value
    }

    /// An amount moved: 1 … Int32.max fen.
    static func amount(_ value: Int64, _ field: @autoclosure () -> String) throws -> Fen {
        Fen(try range(value, field(), 1...Int64(Int32.max), as: Int.self))
    }

    /// A balance: 0 … Int32.max fen.
    static func balance(_ value: Int64, _ field: @autoclosure () -> String) throws -> Fen {
        Fen(try range(value, field(), 0...Int64(Int32.max), as: Int.self))
    }

    static func counter(_ value: Int64, _ field: @autoclosure () -> String) throws -> UInt16 {
        try range(value, field(), 0...Int64(UInt16.max), as: UInt16.self)
    }

    static func uint32(_ value: Int64, _ field: @autoclosure () -> String, minimum: Int64 = 0) throws -> UInt32 {
        try range(value, field(), minimum...Int64(UInt32.max), as: UInt32.self)
    }

    static func terminalID(_ value: Int64, _ field: @autoclosure () -> String) throws -> TerminalID {
        TerminalID(try range(value, field(), 1...Int64(UInt16.max), as: UInt16.self))
    }

    /// A card UID: 8, 14 or 20 hex digits (4, 7 or 10 bytes), returned upper case.
    static func uid(_ value: String, _ field: @autoclosure () -> String) throws -> String {
        guard [8, 14, 20].contains(value.utf8.count), value.utf8.allSatisfy(Hex.isDigit) else {
            throw APIError.badRequest("\(field()) is not a card UID: give 8, 14 or 20 hex digits (a 4-, 7- or 10-byte UID)")
        }
        return value.uppercased()
    }

    /// Text an operator will read: 1…max characters, no control characters.
    static func text(_ value: String, _ field: @autoclosure () -> String, max: Int) throws -> String {
        guard (1...max).contains(value.count), !value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw APIError.badRequest("\(field()) must be 1–\(max) characters without control characters")
        }
        return value
    }

    /// A name of [0-9A-Za-z._-], 1…64 (merchants).
    static func name(_ value: String, _ field: @autoclosure () -> String) throws -> String {
        guard (1...64).contains(value.utf8.count), value.utf8.allSatisfy(isNameByte) else {
            throw APIError.badRequest("\(field()) must be 1–64 of [0-9A-Za-z._-]")
        }
        return value
    }

    static func isNameByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"): true
        default: false
        }
    }

    /// A terminal's load reference: 8…48 of [0-9A-Za-z_-].
    static func loadReference(_ value: String, _ field: String) throws -> String {
        guard (8...48).contains(value.utf8.count), value.utf8.allSatisfy({ isNameByte($0) && $0 != UInt8(ascii: ".") }) else {
            throw APIError.badRequest("\(field) must be 8–48 of [0-9A-Za-z_-]")
        }
        return value
    }

    /// A load as the service stores it and its flags name it: `T<terminal>-<the terminal's reference>`.
    static func storedLoadReference(_ value: String, _ field: String) throws -> String {
        let parts = value.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].first == "T", let terminal = UInt16(parts[0].dropFirst()), terminal > 0,
              "T\(terminal)" == parts[0], (try? loadReference(String(parts[1]), field)) != nil else {
            throw APIError.badRequest("\(field) must be a load as its flags name it: T<terminal>-<reference> (reference 8–48 of [0-9A-Za-z_-])")
        }
        return value
    }

    /// A decimal integer from a path or query (digits only: no sign, no spaces).
    static func integer(_ text: String?, _ field: String, _ bounds: ClosedRange<Int64>) throws -> Int64 {
        guard let text, (1...19).contains(text.utf8.count), text.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }),
              let value = Int64(text) else {
            throw APIError.badRequest("\(field) must be a whole number \(bounds.lowerBound)…\(bounds.upperBound)")
        }
        return try range(value, field, bounds)
    }

    /// A business day, `YYYY-MM-DD`, a real date.
    static func day(_ text: String?, _ field: String) throws -> String {
        let message = "\(field) must be a date YYYY-MM-DD, e.g. 2026-03-01"
        guard let text, text.utf8.count == 10 else { throw APIError.badRequest(message) }
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].count == 4, parts[1].count == 2, parts[2].count == 2,
              parts.allSatisfy({ $0.utf8.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) } }),
              let year = Int(parts[0]), let month = Int(parts[1]), let day = Int(parts[2]),
              year >= 1, (1...12).contains(month) else { throw APIError.badRequest(message) }
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
        let days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
        guard (1...days).contains(day) else { throw APIError.badRequest(message) }
        return text
    }
}

func unixSeconds(_ date: Date) -> Int64 { Int64(date.timeIntervalSince1970.rounded(.down)) }

// MARK: requests

/// One uploaded record as sent; `record(index:)` checks every field.
struct WireRecord: Decodable, Equatable {
    var terminalID: Int64
    var terminalSequence: Int64
    var kind: String
    var cardUID: String
    var cardSerial: Int64?
    var amount: Int64
    var balanceBefore: Int64
    var counterBefore: Int64
    var consumption: Int64?
    var referenceBefore: Int64?
    var settlementReference: Int64?
    var outcome: String
    var balanceAfter: Int64?
    var counterAfter: Int64?
    var createdAt: Int64

    enum CodingKeys: String, CodingKey, CaseIterable {
        case terminalID, terminalSequence, kind, cardUID, cardSerial, amount, balanceBefore, counterBefore, consumption,
             referenceBefore, settlementReference, outcome, balanceAfter, counterAfter, createdAt

        /// The fields a record must carry (the others are optional).
        static let required: [CodingKeys] = [.terminalID, .terminalSequence, .kind, .cardUID, .amount, .balanceBefore,
                                             .counterBefore, .outcome, .createdAt]
    }
}

// In an extension: the struct keeps its memberwise initializer (UploadReader's).
extension WireRecord {
    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        terminalID = try c.int(.terminalID)
        terminalSequence = try c.int(.terminalSequence)
        kind = try c.decode(String.self, forKey: .kind)
        cardUID = try c.decode(String.self, forKey: .cardUID)
        cardSerial = try c.optionalInt(.cardSerial)
        amount = try c.int(.amount)
        balanceBefore = try c.int(.balanceBefore)
        counterBefore = try c.int(.counterBefore)
        consumption = try c.optionalInt(.consumption)
        referenceBefore = try c.optionalInt(.referenceBefore)
        settlementReference = try c.optionalInt(.settlementReference)
        outcome = try c.decode(String.self, forKey: .outcome)
        balanceAfter = try c.optionalInt(.balanceAfter)
        counterAfter = try c.optionalInt(.counterAfter)
        createdAt = try c.int(.createdAt)
    }

    func record(index: Int, from terminal: TerminalID) throws -> TerminalRecord {
        func at() -> String { "records[\(index)]" }
        let id = try Check.terminalID(terminalID, "\(at()).terminalID")
        guard id == terminal else {
            throw APIError.forbidden("\(at()).terminalID is \(id) but the request is signed by terminal \(terminal): a terminal uploads only its own records")
        }
        guard let kind = TransactionIntent.Kind(rawValue: kind) else {
            throw APIError.badRequest("\(at()).kind is not one of \(TransactionIntent.Kind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard let outcome = RecordOutcome(rawValue: outcome) else {
            throw APIError.badRequest("\(at()).outcome is not one of done, not-done, undetermined")
        }
        var balanceAfter: Fen?
        var counterAfter: UInt16?
        if outcome == .done {
            guard let after = self.balanceAfter, let counter = self.counterAfter else {
                throw APIError.badRequest("\(at()) is done but lacks balanceAfter or counterAfter: a done record carries what the card showed after it")
            }
            balanceAfter = try Check.balance(after, "\(at()).balanceAfter")
            counterAfter = try Check.counter(counter, "\(at()).counterAfter")
        } else if self.balanceAfter != nil || self.counterAfter != nil {
            throw APIError.badRequest("\(at()) is \(outcome.rawValue) but carries balanceAfter or counterAfter: only done records do")
        }
        return TerminalRecord(
            terminalID: id, terminalSequence: try Check.uint32(terminalSequence, "\(at()).terminalSequence"), kind: kind,
            cardUID: try Check.uid(cardUID, "\(at()).cardUID"),
            cardSerial: try cardSerial.map { try Check.uint32($0, "\(at()).cardSerial", minimum: 1) },
            amount: try Check.amount(amount, "\(at()).amount"),
            balanceBefore: try Check.balance(balanceBefore, "\(at()).balanceBefore"),
            counterBefore: try Check.counter(counterBefore, "\(at()).counterBefore"),
            consumption: try consumption.map { try Check.balance($0, "\(at()).consumption") },
            referenceBefore: try referenceBefore.map { try Check.uint32($0, "\(at()).referenceBefore") },
            settlementReference: try settlementReference.map { try Check.uint32($0, "\(at()).settlementReference") },
            outcome: outcome, balanceAfter: balanceAfter, counterAfter: counterAfter,
            createdAt: Date(timeIntervalSince1970: TimeInterval(try Check.range(createdAt, "\(at()).createdAt", 1...Check.maxUnixTime)))
        )
    }
}

struct WireUpload: Decodable, Equatable {
    var records: [WireRecord]

    init(records: [WireRecord]) { self.records = records }

    /// The body's upload: `UploadReader` for the usual shape, `JSONDecoder` for everything else (and its errors).
    static func decode(_ body: ByteBuffer) throws -> WireUpload {
        try UploadReader.read(body) ?? decodeBody(WireUpload.self, from: body)
    }

    /// Checks the batch's size before its records are decoded one by one.
    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        var list = try c.nestedUnkeyedContainer(forKey: .records)
        if let count = list.count, !(1...SettlementLimits.maxRecordsPerBatch).contains(count) {
            throw APIError.badRequest("records has \(count) entries: send 1–\(SettlementLimits.maxRecordsPerBatch) records per batch")
        }
        var records: [WireRecord] = []
        while !list.isAtEnd { records.append(try list.decode(WireRecord.self)) }
        self.records = records
    }

    enum CodingKeys: String, CodingKey { case records }

    func records(from terminal: TerminalID) throws -> [TerminalRecord] {
        var seen: [UInt32: Int] = [:]
        return try records.enumerated().map { index, wire in
            let record = try wire.record(index: index, from: terminal)
            if let first = seen.updateValue(index, forKey: record.terminalSequence) {
                throw APIError.badRequest("records[\(index)] repeats terminalSequence \(record.terminalSequence) of records[\(first)]: send each record once per batch")
            }
            return record
        }
    }
}

struct WireLoadPrepare: Decodable {
    var reference: String
    var cardSerial: Int64
    var amount: Int64
    var balanceBefore: Int64
    var counterBefore: Int64

    enum CodingKeys: String, CodingKey { case reference, cardSerial, amount, balanceBefore, counterBefore }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        reference = try c.string(.reference)
        cardSerial = try c.int(.cardSerial)
        amount = try c.int(.amount)
        balanceBefore = try c.int(.balanceBefore)
        counterBefore = try c.int(.counterBefore)
    }
}

struct WireLoadConfirm: Decodable {
    var balanceAfter: Int64
    var counterAfter: Int64

    enum CodingKeys: String, CodingKey { case balanceAfter, counterAfter }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        balanceAfter = try c.int(.balanceAfter)
        counterAfter = try c.int(.counterAfter)
    }
}

struct WireLoadSettle: Decodable {
    var credited: Bool
    var reason: String

    enum CodingKeys: String, CodingKey { case credited, reason }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        credited = try c.decode(Bool.self, forKey: .credited)
        reason = try c.string(.reason)
    }
}

struct WireAccountOpen: Decodable {
    var name: String
    var initialBalance: Int64?

    enum CodingKeys: String, CodingKey { case name, initialBalance }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        initialBalance = try c.optionalInt(.initialBalance)
    }
}

struct WireCardIssue: Decodable {
    var serial: Int64
    var uid: String
    var accountID: Int64

    enum CodingKeys: String, CodingKey { case serial, uid, accountID }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        serial = try c.int(.serial)
        uid = try c.string(.uid)
        accountID = try c.int(.accountID)
    }
}

struct WireStatusChange: Decodable {
    var reason: String?

    enum CodingKeys: String, CodingKey { case reason }

    init(reason: String? = nil) { self.reason = reason }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        reason = try c.optional(String.self, .reason)
    }
}

struct WireTerminalRegister: Decodable {
    var id: Int64
    var merchant: String
    /// A station (`TerminalInfo.loads`); absent: not one.
    var loads: Bool?

    enum CodingKeys: String, CodingKey { case id, merchant, loads }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.int(.id)
        merchant = try c.string(.merchant)
        loads = try c.optional(Bool.self, .loads)
    }
}

// MARK: responses

struct WireAck: Encodable {
    var terminalSequence: UInt32
    var status: String
    var booking: String
    var flags: [String]
    var receivedAt: Int64

    init(_ ack: RecordAck) {
        terminalSequence = ack.terminalSequence
        status = ack.status.rawValue
        booking = ack.booking.rawValue
        flags = ack.flags
        receivedAt = unixSeconds(ack.receivedAt)
    }
}

struct WireUploadResponse: Encodable {
    var acks: [WireAck]
    var serverTime: Int64

    /// The bytes `jsonResponse` would send, written by hand (a 1,000-record batch's answer took ~11 ms through
    /// `JSONEncoder`; see WireJSONWriter).
    var json: [UInt8] {
        var writer = WireJSONWriter(capacity: 32 + acks.count * 110)
        writer.beginObject()
        writer.key("acks")
        writer.beginArray()
        for ack in acks {
            writer.beginObject()
            writer.field("booking", ack.booking)
            writer.key("flags")
            writer.beginArray()
            for flag in ack.flags { writer.value(flag) }
            writer.endArray()
            writer.field("receivedAt", ack.receivedAt)
            writer.field("status", ack.status)
            writer.field("terminalSequence", Int64(ack.terminalSequence))
            writer.endObject()
        }
        writer.endArray()
        writer.field("serverTime", serverTime)
        writer.endObject()
        return writer.bytes
    }
}

struct WireTime: Encodable {
    var unixTime: Int64
    var signingWindow: Int64
}

struct WireBlacklistDelta: Encodable {
    var version: Int64
    var serial: UInt32
    var uid: String
    var action: String
    var reason: String
}

struct WireBlacklistPage: Encodable {
    var changes: [WireBlacklistDelta]
    var version: Int64
    var more: Bool

    init(_ page: BlacklistPage) {
        changes = page.changes.map {
            WireBlacklistDelta(version: $0.version, serial: $0.serial, uid: $0.uid, action: $0.action.rawValue, reason: $0.reason)
        }
        version = page.version
        more = page.more
    }
}

struct WireParameters: Encodable {
    var version: Int64
    var maxOfflineDebit: Int
    var maxUnsentCount: Int
    var maxUnsentTotal: Int
    var maxUnsentAge: Int
    var maxBlacklistAge: Int
    var waterUnitPrice: Int
    var waterWalletCap: Int
    var fixedPrices: [String: Int]

    init(_ p: TerminalParameters) {
        version = p.version
        maxOfflineDebit = p.maxOfflineDebit.rawValue
        maxUnsentCount = p.maxUnsentCount
        maxUnsentTotal = p.maxUnsentTotal.rawValue
        maxUnsentAge = p.maxUnsentAge
        maxBlacklistAge = p.maxBlacklistAge
        waterUnitPrice = p.waterUnitPrice.rawValue
        waterWalletCap = p.waterWalletCap.rawValue
        fixedPrices = p.fixedPrices.mapValues(\.rawValue)
    }
}

struct WireLoad: Encodable {
    var reference: String
    var terminalID: UInt16
    var cardSerial: UInt32
    var amount: Int
    var balanceBefore: Int
    var counterBefore: UInt16
    var phase: String
    var updatedAt: Int64

    init(_ load: LoadState, reference: String) {
        self.reference = reference
        terminalID = load.terminalID.rawValue
        cardSerial = load.cardSerial
        amount = load.amount.rawValue
        balanceBefore = load.balanceBefore.rawValue
        counterBefore = load.counterBefore
        phase = load.phase.rawValue
        updatedAt = unixSeconds(load.updatedAt)
    }
}

struct WireAccount: Encodable {
    var id: Int64
    var name: String
    var balance: Int
    var createdAt: Int64

    init(_ a: Account) {
        id = a.id
        name = a.name
        balance = a.balance.rawValue
        createdAt = unixSeconds(a.createdAt)
    }
}

struct WireCard: Encodable {
    var serial: UInt32
    var uid: String
    var accountID: Int64
    var status: String
    var purseMirror: Int
    var purseCounter: UInt16?
    var issuedAt: Int64

    init(_ c: Card) {
        serial = c.serial
        uid = c.uid
        accountID = c.accountID
        status = c.status.rawValue
        purseMirror = c.purseMirror.rawValue
        purseCounter = c.purseCounter
        issuedAt = unixSeconds(c.issuedAt)
    }
}

struct WireCardStatusChange: Encodable {
    var card: WireCard
    var blacklistVersion: Int64
}

struct WireTerminal: Encodable {
    var id: UInt16
    var merchant: String
    var enabled: Bool
    var loads: Bool
    /// Only in the registration's response.
    var secret: String?

    init(_ t: TerminalInfo, showingSecret: Bool = false) {
        id = t.id.rawValue
        merchant = t.merchant
        enabled = t.enabled
        loads = t.loads
        secret = showingSecret ? Hex.string(t.secret) : nil
    }
}

struct WireDailyTotal: Encodable {
    var day: String
    var merchant: String
    var terminalID: UInt16?
    var count: Int
    var total: Int
}

struct WireDailyReport: Encodable {
    var day: String
    var totals: [WireDailyTotal]
}

struct WireLedgerEntry: Encodable {
    var movementID: Int64
    var account: String
    var amount: Int
    var kind: String
    var terminalID: UInt16?
    var terminalSequence: UInt32?
    var bookedAt: Int64
}

struct WireStatement: Encodable {
    var serial: UInt32
    var entries: [WireLedgerEntry]
}

struct WireFlag: Encodable {
    var id: Int64
    var code: String
    var terminalID: UInt16?
    var terminalSequence: UInt32?
    var cardSerial: UInt32?
    var message: String
    var raisedAt: Int64
}

struct WireFlagList: Encodable {
    var flags: [WireFlag]
}
