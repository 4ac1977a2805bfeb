import Crypto
import Foundation

/// A calendar day as the card stores it: days since 2000-01-01 in China Standard Time (UTC+8), where the campus is.
public struct CardDay: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    static let epoch = Date(timeIntervalSince1970: 946_684_800 - 8 * 3600)  // 2000-01-01 00:00 UTC+8

    /// The day of `date`, clamped to the range a `u16` holds (for "today"; an expiry date uses `init(exactly:)`).
    public init(_ date: Date) {
        rawValue = UInt16(clamping: max(0, Int(date.timeIntervalSince(Self.epoch) / 86_400)))
    }

    /// The day of `date`, or nil when a `u16` of days since 2000-01-01 cannot hold it (before 2000-01-01 or after
    /// `CardDay.last`, 2179-06-06, in UTC+8).
    public init?(exactly date: Date) {
        let days = (date.timeIntervalSince(Self.epoch) / 86_400).rounded(.down)
        guard days >= 0, days <= Double(UInt16.max) else { return nil }
        rawValue = UInt16(days)
    }

    /// The first and last days the card can hold: 2000-01-01 and 2179-06-06.
    public static let first = CardDay(rawValue: 0)
    public static let last = CardDay(rawValue: .max)

    /// "2026-11-22".
    public var description: String {
        CivilDate.text(daysSince1970: 10_957 + Int64(rawValue))  // 2000-01-01 is day 10,957
    }

    public static func < (lhs: CardDay, rhs: CardDay) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// Big-endian field helpers for 16-byte records.
enum Field {
    static func u16(_ bytes: [UInt8], _ at: Int) -> UInt16 { UInt16(bytes[at]) << 8 | UInt16(bytes[at + 1]) }
    static func u24(_ bytes: [UInt8], _ at: Int) -> UInt32 { UInt32(bytes[at]) << 16 | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) }
    static func u32(_ bytes: [UInt8], _ at: Int) -> UInt32 { UInt32(u16(bytes, at)) << 16 | UInt32(u16(bytes, at + 2)) }
    static func put16(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xFF)] }
    static func put24(_ value: UInt32) -> [UInt8] { [UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)] }
    static func put32(_ value: UInt32) -> [UInt8] { put16(UInt16(value >> 16)) + put16(UInt16(value & 0xFFFF)) }
}

/// The identity record: sector 1, blocks 4 and 5 (docs/card-layout.md).
public struct Identity: Hashable, Sendable {
    public enum CardType: UInt8, Sendable, CaseIterable, Codable {
        case staff = 1, student, identity, temporary
        public var name: String { ["", "staff", "student", "identity", "temporary"][Int(rawValue)] }
    }

    public enum Status: UInt8, Sendable, CaseIterable, Codable {
        case normal = 0, lost, frozen, cancelled
        public var name: String { ["normal", "lost", "frozen", "cancelled"][Int(rawValue)] }
    }

    public static let layoutVersion: UInt8 = 1
    public static let blocks = (first: 4, second: 5)

    public var serial: UInt32
    public var account: UInt32
    public var type: CardType
    public var keyVersion: UInt8
    public var issued: CardDay
    public var expires: CardDay
    public var status: Status
    public var statusChanged: CardDay
    /// The holder's limits and PIN verifier (block 5 bytes 3–11; all zero on cards of the first layout: the default
    /// limits and no PIN). Written only at the card office, with key B.
    public var holder: HolderSettings

    public init(serial: UInt32, account: UInt32, type: CardType, keyVersion: UInt8, issued: CardDay, expires: CardDay,
                status: Status = .normal, statusChanged: CardDay? = nil, holder: HolderSettings = .defaults) {
        self.holder = holder
        self.serial = serial
        self.account = account
        self.type = type
        self.keyVersion = keyVersion
        self.issued = issued
        self.expires = expires
        self.status = status
        self.statusChanged = statusChanged ?? issued
    }

    /// Blocks 4 and 5, the MAC in the last 4 bytes of block 5 covering both.
    public func encode(uid: [UInt8], macKey: SymmetricKey) -> (first: [UInt8], second: [UInt8]) {
        let first = Field.put32(serial) + Field.put32(account) + [type.rawValue, Self.layoutVersion, keyVersion]
            + Field.put16(issued.rawValue) + Field.put16(expires.rawValue) + [0]
        let body = [status.rawValue] + Field.put16(statusChanged.rawValue) + holder.encode()
        let mac = CardMAC.compute(key: macKey, uid: uid, block: Self.blocks.first, record: first + body)
        return (first, body + mac)
    }

    /// The layout and key versions of block 4, readable before the MAC key is known.
    public static func versions(of first: [UInt8]) throws -> (layout: UInt8, key: UInt8) {
        guard first.count == 16 else { throw CardOperationError(.garbled, "the identity block is not 16 bytes") }
        return (first[9], first[10])
    }

    /// Block 4 alone, unverified, with `status` from elsewhere: the card office's repair of a block 5 torn during a
    /// status change (block 4 is written only at issue). The result must be written back with a fresh MAC.
    public init(unverifiedFirst first: [UInt8], status: Status, on day: CardDay) throws {
        guard first.count == 16, first[9] == Self.layoutVersion, let type = CardType(rawValue: first[8]) else {
            throw CardOperationError(.garbled, "the identity block does not decode; the card needs re-issuing")
        }
        self.init(serial: Field.u32(first, 0), account: Field.u32(first, 4), type: type, keyVersion: first[10],
                  issued: CardDay(rawValue: Field.u16(first, 11)), expires: CardDay(rawValue: Field.u16(first, 13)),
                  status: status, statusChanged: day)
    }

    /// Decodes and verifies blocks 4 and 5.
    public init(first: [UInt8], second: [UInt8], uid: [UInt8], macKey: SymmetricKey) throws {
        guard first.count == 16, second.count == 16 else { throw CardOperationError(.garbled, "the identity blocks are not 16 bytes each") }
        guard first[9] == Self.layoutVersion else {
            throw CardOperationError(.unsupportedLayout, "the card has layout version \(first[9]); this terminal reads version \(Self.layoutVersion): update the terminal software")
        }
        let expected = CardMAC.compute(key: macKey, uid: uid, block: Self.blocks.first, record: first + Array(second[0..<12]))
        guard CardMAC.matches(Array(second[12..<16]), expected) else {
            throw CardOperationError(.tampered, "the identity record's MAC does not match: the card was altered without the MAC key; keep the card and report it")
        }
        guard let type = CardType(rawValue: first[8]), let status = Status(rawValue: second[0]) else {
            throw CardOperationError(.garbled, "the identity record holds an unknown card type or status; the card needs re-issuing")
        }
        self.init(serial: Field.u32(first, 0), account: Field.u32(first, 4), type: type, keyVersion: first[10],
                  issued: CardDay(rawValue: Field.u16(first, 11)), expires: CardDay(rawValue: Field.u16(first, 13)),
                  status: status, statusChanged: CardDay(rawValue: Field.u16(second, 1)),
                  holder: try HolderSettings(bytes: Array(second[3..<12])))
    }
}

/// The purse record: sector 2, block 8 — the commit record of the tearing protocol (docs/card-layout.md).
public struct PurseRecord: Hashable, Sendable {
    public static let block = 8

    public enum Operation: UInt8, Sendable, CaseIterable, Codable {
        case issue = 0, debit, load, subsidy, repair, statusChange
    }

    public var counter: UInt16
    /// A copy of the identity status, so a debit refuses a locked card without reading sector 1.
    public var status: Identity.Status
    public var lastOperation: Operation
    public var lastDay: CardDay
    /// Debits on `lastDay`, for the daily limit (stored in 16 bits: saturates at 655.34 yuan; 655.35 is
    /// `unknownDebitedToday`).
    public var debitedToday: Fen
    /// Today's total after a rebuilt record: unknown, so every debit that day needs the PIN.
    public static let unknownDebitedToday = Fen(Int(UInt16.max))
    /// The most today's total records (655.34 yuan): a total that reached it is at least that, so it too asks for the PIN.
    public static let saturatedDebitedToday = Fen(Int(UInt16.max) - 1)
    /// A copy of the identity's expiry, so a debit refuses an expired card without reading sector 1.
    public var expires: CardDay
    public var terminalID: UInt16
    /// The low byte of the terminal's sequence number; with the counter and the amount it lets the interrupted
    /// terminal recognise its own operation.
    public var terminalSequence: UInt8
    /// Wrong PINs entered since the last right one (byte 2 bits 6–7): `PINTries.blocked` (3) blocks debits that need
    /// the PIN until the card office resets it. Written by any terminal (key A) without moving the counter.
    public var wrongPINTries: UInt8
    /// Byte 2 bit 3: the holder's limits are below the defaults, so a debit reads the identity (sector 1) whatever
    /// the amount. Clear: a debit within the default limits needs neither the identity nor the PIN.
    public var holderLimitsLowered: Bool

    public init(counter: UInt16, status: Identity.Status, lastOperation: Operation, lastDay: CardDay, debitedToday: Fen,
                expires: CardDay, terminalID: UInt16, terminalSequence: UInt8, wrongPINTries: UInt8 = 0, holderLimitsLowered: Bool = false) {
        self.wrongPINTries = min(wrongPINTries, PINTries.blocked)
        self.holderLimitsLowered = holderLimitsLowered
        self.counter = counter
        self.status = status
        self.lastOperation = lastOperation
        self.lastDay = lastDay
        self.debitedToday = debitedToday
        self.expires = expires
        self.terminalID = terminalID
        self.terminalSequence = terminalSequence
    }

    /// 16 bytes: counter u16 | wrong PIN tries << 6 | status << 4 | limits lowered << 3 | operation u8 | last day u16 | today's debits u16 | expiry u16 |
    /// terminal id u16 | terminal sequence u8 | MAC ×4 (vouching for `balance`, the primary value it commits).
    public func encode(uid: [UInt8], balance: Fen, macKey: SymmetricKey) -> [UInt8] {
        // Saturates one below the "unknown" marker, which only `unknownDebitedToday` itself writes.
        let today = debitedToday == Self.unknownDebitedToday ? UInt16.max
            : UInt16(clamping: min(max(0, debitedToday.rawValue), Self.saturatedDebitedToday.rawValue))
        let body = Field.put16(counter) + [wrongPINTries << 6 | status.rawValue << 4 | (holderLimitsLowered ? 0x08 : 0) | lastOperation.rawValue] + Field.put16(lastDay.rawValue)
            + Field.put16(today) + Field.put16(expires.rawValue) + Field.put16(terminalID) + [terminalSequence]
        return body + CardMAC.compute(key: macKey, uid: uid, block: Self.block, record: body, value: Int32(balance.rawValue))
    }

    /// Whether `block` is a record that vouches for `balance` (the MAC check of the tearing protocol).
    public static func vouches(_ block: [UInt8], for balance: Fen, uid: [UInt8], macKey: SymmetricKey) -> Bool {
        guard block.count == 16 else { return false }
        let expected = CardMAC.compute(key: macKey, uid: uid, block: Self.block, record: Array(block[0..<12]), value: Int32(truncatingIfNeeded: balance.rawValue))
        return CardMAC.matches(Array(block[12..<16]), expected)
    }

    /// Decodes a record already shown to vouch for a balance (`vouches`).
    public init(block: [UInt8]) throws {
        guard block.count == 16, let status = Identity.Status(rawValue: block[2] >> 4 & 0x03),
              let operation = Operation(rawValue: block[2] & 0x07) else {
            throw CardOperationError(.garbled, "the purse record does not decode: torn or not a campus card record")
        }
        self.init(counter: Field.u16(block, 0), status: status, lastOperation: operation, lastDay: CardDay(rawValue: Field.u16(block, 3)),
                  debitedToday: Fen(Int(Field.u16(block, 5))), expires: CardDay(rawValue: Field.u16(block, 7)),
                  terminalID: Field.u16(block, 9), terminalSequence: block[11], wrongPINTries: block[2] >> 6,
                  holderLimitsLowered: block[2] & 0x08 != 0)
    }
}
