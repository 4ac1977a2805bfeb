import Foundation

/// Why a card or an operation was refused: a code and one line (what, why, what to do). Nothing was written when one
/// of these is thrown before an operation's first card write, which is where every refusal is decided.
public struct CardOperationError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case notCampusCard = "not-campus-card", unsupportedLayout = "unsupported-layout", tampered = "mac-mismatch"
        case replay, insufficientFunds = "insufficient-funds", overLimit = "over-limit", cardLocked = "card-locked"
        case expired, unknownKeyVersion = "unknown-key-version", readerCannot = "reader-cannot", notBlank = "not-blank"
        case journal
        /// The keystore lacks the master this operation needs (a terminal's keystore has no loader master).
        case missingKey = "missing-key"
        /// A block that does not decode (a torn write, or garbage).
        case garbled
        /// The water wallet's record was torn mid-write and nothing on the card vouches for its balance: only the
        /// interrupted controller (from its journal) or a settlement station (a reset) can go on.
        case waterInterrupted = "water-interrupted"
        /// 一密两限: the debit is over a holder's limit and no PIN was given: ask the holder for it.
        case pinRequired = "pin-required"
        /// The PIN given is not the card's; `pinTriesLeft` says how many tries remain before it blocks.
        case pinWrong = "pin-wrong"
        /// Three wrong PINs: debits that need the PIN are refused until the card office resets the counter.
        case pinBlocked = "pin-blocked"
        /// The debit needs the PIN but the card carries none (a card of the first layout, or none set yet).
        case pinNotSet = "pin-not-set"
        /// Limits or a PIN the card cannot hold (set at the card office).
        case invalidHolderSetting = "invalid-holder-setting"
    }
    /// With `pinWrong`: the tries left before the PIN blocks.
    public var pinTriesLeft: Int?
    public var code: Code
    public var message: String
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }
    public var description: String { message }
}

