/// The two status bytes SW1 SW2 that end every response APDU.
///
/// Named members carry the meaning PC/SC Part 3 gives them; a reader may use them differently
/// (ACS readers answer `63 00` for nearly every failure), which the reader profile interprets.
public struct StatusWord: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16

    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public init(sw1: UInt8, sw2: UInt8) { self.rawValue = UInt16(sw1) << 8 | UInt16(sw2) }

    public var sw1: UInt8 { UInt8(rawValue >> 8) }
    public var sw2: UInt8 { UInt8(rawValue & 0xFF) }

    /// `90 00`: the command completed.
    public static let success = StatusWord(rawValue: 0x9000)
    /// `63 00`: "the operation failed" (ACS readers: wrong key, no card, not authenticated, access denied).
    public static let operationFailed = StatusWord(rawValue: 0x6300)
    /// `64 00`: timeout or no card response (OMNIKEY 5427).
    public static let executionError = StatusWord(rawValue: 0x6400)
    /// `65 81`: memory failure; the addressed block does not exist or could not be written.
    public static let memoryFailure = StatusWord(rawValue: 0x6581)
    /// `67 00`: wrong length.
    public static let wrongLength = StatusWord(rawValue: 0x6700)
    /// `68 00`: class byte not supported.
    public static let classNotSupported = StatusWord(rawValue: 0x6800)
    /// `69 81`: command incompatible with the file structure (not a value block).
    public static let incompatibleStructure = StatusWord(rawValue: 0x6981)
    /// `69 82`: security status not satisfied (not authenticated, or access conditions refuse).
    public static let securityStatusNotSatisfied = StatusWord(rawValue: 0x6982)
    /// `69 83`: authentication cannot be done (wrong key).
    public static let authenticationFailed = StatusWord(rawValue: 0x6983)
    /// `69 86`: command not allowed (key type unknown, no current block).
    public static let commandNotAllowed = StatusWord(rawValue: 0x6986)
    /// `69 88`: key number not valid.
    public static let invalidKeyNumber = StatusWord(rawValue: 0x6988)
    /// `6A 81`: function not supported by this reader or card.
    public static let functionNotSupported = StatusWord(rawValue: 0x6A81)
    /// `6A 82`: block or file not found.
    public static let blockNotFound = StatusWord(rawValue: 0x6A82)
    /// `6B 00`: wrong P1-P2 (address out of range).
    public static let wrongParameters = StatusWord(rawValue: 0x6B00)
    /// `6D 00`: instruction not supported.
    public static let instructionNotSupported = StatusWord(rawValue: 0x6D00)
    /// `6E 00`: class not supported.
    public static let classNotSupportedAlt = StatusWord(rawValue: 0x6E00)

    public var isSuccess: Bool { self == .success }

    /// `6C XX`: the exact length to ask for; `nil` for any other status word.
    public var correctLength: UInt8? { sw1 == 0x6C ? sw2 : nil }

    /// What Part 3 says this status word means, in words.
    public var meaning: String {
        switch self {
        case .success: return "success"
        case .operationFailed: return "operation failed"
        case .executionError: return "no response from the card (timeout)"
        case .memoryFailure: return "memory failure or block does not exist"
        case .wrongLength: return "wrong length"
        case .classNotSupported, .classNotSupportedAlt: return "class not supported"
        case .incompatibleStructure: return "incompatible with the block's structure (not a value block?)"
        case .securityStatusNotSatisfied: return "security status not satisfied (not authenticated or access refused)"
        case .authenticationFailed: return "authentication failed (wrong key?)"
        case .commandNotAllowed: return "command not allowed"
        case .invalidKeyNumber: return "key number not valid"
        case .functionNotSupported: return "function not supported"
        case .blockNotFound: return "block not found"
        case .wrongParameters: return "wrong parameters P1-P2"
        case .instructionNotSupported: return "instruction not supported"
        default:
            if let length = correctLength { return "wrong Le; the card has \(length) bytes" }
            return "unknown status"
        }
    }

    public var description: String { Hex.encode([sw1, sw2], separator: " ") }
}
