import Crypto

/// The holder's two limits of "one password, two limits" (一密两限, seed 003): above the per-transaction limit, or when
/// today's debits would pass the daily limit, a debit needs the holder's PIN. Integer fen.
public struct HolderLimits: Hashable, Sendable {
    public var perTransaction: Fen
    public var daily: Fen

    /// 50.00 yuan per transaction, 100.00 yuan a day: the rule the domain notes cite (campus-card-domain.md:
    /// "a password is required for a single purchase ≥ 50 yuan or ≥ 100 yuan in a day"; we allow exactly the limit
    /// and ask from one fen over it). Every card without limits of its own (every card of the first layout) has these.
    public static let defaults = HolderLimits(uncheckedPerTransaction: Fen(5_000), daily: Fen(10_000))
    /// The most either limit may be: 655.34 yuan, the most the purse record counts as today's debits (a total that
    /// reached it asks for the PIN anyway). Stored as u16 fen; `FF FF` is never a limit.
    public static let maximum = Fen(65_534)

    /// Refuses limits the card cannot hold or that contradict each other (`invalid-holder-setting`).
    public init(perTransaction: Fen, daily: Fen) throws {
        guard perTransaction >= .zero, daily >= .zero, perTransaction <= Self.maximum, daily <= Self.maximum else {
            throw CardOperationError(.invalidHolderSetting, "limits are 0.00 to \(Self.maximum.yuan) yuan (the most a card counts as today's debits); got \(perTransaction.yuan) per transaction, \(daily.yuan) a day")
        }
        guard perTransaction <= daily else {
            throw CardOperationError(.invalidHolderSetting, "the per-transaction limit (\(perTransaction.yuan) yuan) is above the daily limit (\(daily.yuan) yuan): no debit could use it without the PIN; lower it or raise the daily limit")
        }
        self.init(uncheckedPerTransaction: perTransaction, daily: daily)
    }

    init(uncheckedPerTransaction perTransaction: Fen, daily: Fen) {
        self.perTransaction = perTransaction
        self.daily = daily
    }

    /// Either limit below the default: a terminal must read the identity before every debit (the purse record's
    /// `holderLimitsLowered` bit says so), since a debit within the defaults could still pass the holder's limit.
    public var lowered: Bool { perTransaction < Self.defaults.perTransaction || daily < Self.defaults.daily }

    /// Why debiting `amount` on top of `alreadyToday` needs the PIN, or nil when it does not. `alreadyToday` may be
    /// `PurseRecord.unknownDebitedToday` (a rebuilt record) or saturated: both need the PIN.
    public func pinReason(for amount: Fen, alreadyToday: Fen) -> String? {
        if amount > perTransaction {
            return "\(amount.yuan) yuan is over the holder's \(perTransaction.yuan) yuan per-transaction limit"
        }
        if alreadyToday == PurseRecord.unknownDebitedToday {
            return "today's debits on this card are unknown (its record was rebuilt after a torn write; tomorrow the limit applies again)"
        }
        if alreadyToday >= PurseRecord.saturatedDebitedToday {
            return "today's debits on this card reached \(PurseRecord.saturatedDebitedToday.yuan) yuan, the most it records"
        }
        if Fen(alreadyToday.rawValue + amount.rawValue) > daily {
            return "today's debits would reach \(Fen(alreadyToday.rawValue + amount.rawValue).yuan) yuan, over the holder's \(daily.yuan) yuan daily limit"
        }
        return nil
    }
}

/// A PIN as typed by the holder: 4 to 12 ASCII digits (6 typical: seed 003's initial PIN is the last six digits of the
/// ID number, X read as 1). Never printed: its description is redacted.
public struct PIN: Equatable, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    let digits: [UInt8]

    public init(_ text: String) throws {
        let bytes = Array(text.utf8)
        guard (4...12).contains(bytes.count), bytes.allSatisfy({ (0x30...0x39).contains($0) }) else {
            throw CardOperationError(.invalidHolderSetting, "a PIN is 4 to 12 digits (0-9), nothing else")
        }
        digits = bytes
    }

    public var description: String { "<PIN redacted>" }
    public var debugDescription: String { description }
}

/// What the card keeps of the PIN: 4 bytes of AES-CMAC under a key derived from the card's MAC key, over the UID and
/// the PIN. Never the PIN; without the MAC master it tells nothing (a holder of the MAC master can search all 10^6
/// six-digit PINs offline: docs/threat-model.md).
///
/// `pinKey = AES-CMAC(macKey, "OneCard PIN verifier key v1")` (16 bytes, never stored: the label separates it from the
/// record MACs, which are 4-byte truncations under `macKey` itself); `verifier = AES-CMAC(pinKey, UID || length || PIN
/// digits as ASCII)[0..<4]`.
public struct PINVerifier: Hashable, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    public static let length = 4
    static let label = Array("OneCard PIN verifier key v1".utf8)
    let bytes: [UInt8]

    init?(bytes: [UInt8]) {
        guard bytes.count == Self.length else { return nil }
        self.bytes = bytes
    }

    public init(pin: PIN, uid: [UInt8], macKey: SymmetricKey) {
        let pinKey = SymmetricKey(data: KeyDerivation.cmac(macKey, Self.label))
        bytes = KeyDerivation.cmac(pinKey, uid + [UInt8(pin.digits.count)] + pin.digits, outputSize: Self.length)
    }

    /// Whether `pin` is the one this verifier was made from (constant-time comparison).
    public func matches(_ pin: PIN, uid: [UInt8], macKey: SymmetricKey) -> Bool {
        CardMAC.matches(bytes, PINVerifier(pin: pin, uid: uid, macKey: macKey).bytes)
    }

    public var description: String { "<PIN verifier redacted>" }
    public var debugDescription: String { description }
}

/// The wrong-PIN counter in the purse record (byte 2 bits 6–7).
public enum PINTries {
    /// Three wrong PINs in a row block debits that need the PIN until the card office resets the counter.
    public static let blocked: UInt8 = 3
    /// A record rebuilt from the log (rule 2c) lost its counter: it gets one try left, so tearing the wrong-PIN
    /// record write cannot reset the count, and a holder whose debit was torn is not locked out by it.
    public static let afterRebuild: UInt8 = 2
}

/// The holder's settings in identity block 5, bytes 3–11 (MAC'd with blocks 4–5, written only with key B):
///
/// | byte | field |
/// |---|---|
/// | 3 | flags: bit 0 limits set (bytes 4–7), bit 1 PIN set (bytes 8–11); other bits 0 |
/// | 4–5 | per-transaction limit, fen u16 |
/// | 6–7 | daily limit, fen u16 |
/// | 8–11 | PIN verifier |
///
/// All zero — every card of the first layout — means the default limits and no PIN: such a card is read as it is
/// and needs no migration; the card office sets a PIN (and limits) at the holder's next visit.
public struct HolderSettings: Hashable, Sendable {
    /// The holder's limits; nil: the defaults.
    public var limits: HolderLimits?
    /// nil: no PIN on the card, so no debit over a limit until the card office sets one.
    public var pinVerifier: PINVerifier?

    public static let defaults = HolderSettings(limits: nil, pinVerifier: nil)
    static let byteCount = 9

    public init(limits: HolderLimits?, pinVerifier: PINVerifier?) {
        self.limits = limits
        self.pinVerifier = pinVerifier
    }

    /// The limits that apply.
    public var effectiveLimits: HolderLimits { limits ?? .defaults }

    func encode() -> [UInt8] {
        let flags: UInt8 = (limits == nil ? 0 : 0x01) | (pinVerifier == nil ? 0 : 0x02)
        let limitBytes = limits.map { Field.put16(UInt16($0.perTransaction.rawValue)) + Field.put16(UInt16($0.daily.rawValue)) }
            ?? [0, 0, 0, 0]
        return [flags] + limitBytes + (pinVerifier?.bytes ?? [0, 0, 0, 0])
    }

    /// Bytes 3–11 of block 5, already MAC-checked: unknown flag bits were written by newer software
    /// (`unsupported-layout`); limits out of range or bytes behind a clear flag are `garbled`.
    init(bytes: [UInt8]) throws {
        precondition(bytes.count == Self.byteCount)
        let flags = bytes[0]
        guard flags & ~0x03 == 0 else {
            throw CardOperationError(.unsupportedLayout, "the card's holder settings use flags this terminal does not know (\(flags)): update the terminal software")
        }
        let limitBytes = Array(bytes[1..<5]), verifierBytes = Array(bytes[5..<9])
        if flags & 0x01 != 0 {
            guard let limits = try? HolderLimits(perTransaction: Fen(Int(Field.u16(limitBytes, 0))), daily: Fen(Int(Field.u16(limitBytes, 2)))) else {
                throw CardOperationError(.garbled, "the card's holder limits are out of range; the card office sets them again")
            }
            self.limits = limits
        } else {
            guard limitBytes.allSatisfy({ $0 == 0 }) else { throw CardOperationError(.garbled, "the card's holder settings do not decode; the card office sets them again") }
            self.limits = nil
        }
        if flags & 0x02 != 0 {
            pinVerifier = PINVerifier(bytes: verifierBytes)
        } else {
            guard verifierBytes.allSatisfy({ $0 == 0 }) else { throw CardOperationError(.garbled, "the card's holder settings do not decode; the card office sets them again") }
            pinVerifier = nil
        }
    }
}
