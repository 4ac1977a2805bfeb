import SmartCard

/// A PC/SC return code (SCARD_E_*, SCARD_W_*, SCARD_F_*, SCARD_P_*) with its C name and a sentence a field
/// technician understands: what happened and what to do.
///
/// `catch PCSCError.noService { }` works through `~=`.
public struct PCSCError: Error, RawRepresentable, Hashable, Sendable, CustomStringConvertible, TransportError {
    public let rawValue: Int

    public init(rawValue: Int) { self.rawValue = rawValue }

    /// The C name, e.g. "SCARD_E_NO_SERVICE"; "SCARD_0x…" for a code pcsc-lite does not define.
    public var name: String { Self.table[rawValue]?.name ?? "SCARD_0x" + String(rawValue, radix: 16, uppercase: true) }

    /// What happened and what to do, in one sentence.
    public var explanation: String {
        Self.table[rawValue]?.sentence ?? "pcscd returned an unknown error code; restart pcscd and retry, and report the code if it persists"
    }

    public var description: String { "\(explanation) (\(name))" }

    public var transportFailure: TransportFailure { Self.table[rawValue]?.failure ?? .other }

    public static func ~= (pattern: PCSCError, value: any Error) -> Bool {
        (value as? PCSCError) == pattern
    }

    /// Every code pcsc-lite 1.9.9 defines (pcsclite.h).
    public static var allKnown: [PCSCError] { table.keys.sorted().map(PCSCError.init(rawValue:)) }

    public static let internalError = PCSCError(rawValue: 0x8010_0001)
    public static let cancelled = PCSCError(rawValue: 0x8010_0002)
    public static let invalidHandle = PCSCError(rawValue: 0x8010_0003)
    public static let invalidParameter = PCSCError(rawValue: 0x8010_0004)
    public static let timeout = PCSCError(rawValue: 0x8010_000A)
    public static let sharingViolation = PCSCError(rawValue: 0x8010_000B)
    public static let noSmartcard = PCSCError(rawValue: 0x8010_000C)
    public static let notTransacted = PCSCError(rawValue: 0x8010_0016)
    public static let readerUnavailable = PCSCError(rawValue: 0x8010_0017)
    public static let unknownReader = PCSCError(rawValue: 0x8010_0009)
    public static let noService = PCSCError(rawValue: 0x8010_001D)
    public static let serviceStopped = PCSCError(rawValue: 0x8010_001E)
    public static let noReadersAvailable = PCSCError(rawValue: 0x8010_002E)
    public static let insufficientBuffer = PCSCError(rawValue: 0x8010_0008)
    public static let unresponsiveCard = PCSCError(rawValue: 0x8010_0066)
    public static let unpoweredCard = PCSCError(rawValue: 0x8010_0067)
    public static let resetCard = PCSCError(rawValue: 0x8010_0068)
    public static let removedCard = PCSCError(rawValue: 0x8010_0069)

    private static let restart = "restart pcscd (systemctl restart pcscd) and retry"

    private static let table: [Int: (name: String, sentence: String, failure: TransportFailure)] = [
        0x8010_0001: ("SCARD_F_INTERNAL_ERROR", "pcscd hit an internal error; \(restart)", .other),
        0x8010_0002: ("SCARD_E_CANCELLED", "the wait was cancelled on purpose", .other),
        0x8010_0003: ("SCARD_E_INVALID_HANDLE", "the connection to the reader is no longer valid (pcscd restarted or the reader was replugged); reconnect", .serviceUnavailable),
        0x8010_0004: ("SCARD_E_INVALID_PARAMETER", "a request to pcscd was malformed; this is a bug in the program, report it", .other),
        0x8010_0005: ("SCARD_E_INVALID_TARGET", "pcscd got an invalid target; \(restart)", .other),
        0x8010_0006: ("SCARD_E_NO_MEMORY", "pcscd ran out of memory; free memory and restart pcscd", .other),
        0x8010_0007: ("SCARD_F_WAITED_TOO_LONG", "pcscd waited too long for the reader; unplug and replug the reader", .noResponse),
        0x8010_0008: ("SCARD_E_INSUFFICIENT_BUFFER", "the reader answered more data than expected; retry, and report it if it persists", .other),
        0x8010_0009: ("SCARD_E_UNKNOWN_READER", "no reader by that name (unplugged or renamed); list readers again", .readerUnavailable),
        0x8010_000A: ("SCARD_E_TIMEOUT", "the reader did not answer in time; check the cable, then retry", .noResponse),
        0x8010_000B: ("SCARD_E_SHARING_VIOLATION", "another program holds the reader exclusively; close it (e.g. another cardctl or cardd) and retry", .readerBusy),
        0x8010_000C: ("SCARD_E_NO_SMARTCARD", "no card on the reader; put the card on the reader and hold it still", .cardRemoved),
        0x8010_000D: ("SCARD_E_UNKNOWN_CARD", "the card is not recognised; check it is a MIFARE Classic card", .other),
        0x8010_000E: ("SCARD_E_CANT_DISPOSE", "pcscd could not reset or eject the card; remove the card and retry", .other),
        0x8010_000F: ("SCARD_E_PROTO_MISMATCH", "the card does not speak the requested protocol; reconnect with any protocol", .other),
        0x8010_0010: ("SCARD_E_NOT_READY", "the reader is not ready; wait a moment and retry", .noResponse),
        0x8010_0011: ("SCARD_E_INVALID_VALUE", "a value sent to pcscd was invalid; this is a bug in the program, report it", .other),
        0x8010_0012: ("SCARD_E_SYSTEM_CANCELLED", "the system cancelled the operation (shutdown or logoff)", .serviceUnavailable),
        0x8010_0013: ("SCARD_F_COMM_ERROR", "communication with pcscd failed; \(restart)", .serviceUnavailable),
        0x8010_0014: ("SCARD_F_UNKNOWN_ERROR", "pcscd reported an unknown error; \(restart)", .other),
        0x8010_0015: ("SCARD_E_INVALID_ATR", "the card's ATR is invalid; present the card again", .other),
        0x8010_0016: ("SCARD_E_NOT_TRANSACTED", "the command did not complete: the card probably left the field mid-command; present it again (a write may or may not have happened)", .cardRemoved),
        0x8010_0017: ("SCARD_E_READER_UNAVAILABLE", "the reader is unavailable (unplugged?); plug it in and retry", .readerUnavailable),
        0x8010_0018: ("SCARD_P_SHUTDOWN", "pcscd is shutting down; start it again and retry", .serviceUnavailable),
        0x8010_0019: ("SCARD_E_PCI_TOO_SMALL", "protocol control buffer too small; this is a bug in the program, report it", .other),
        0x8010_001A: ("SCARD_E_READER_UNSUPPORTED", "pcscd does not support this reader; check the driver (libccid) and the reader model", .readerUnavailable),
        0x8010_001B: ("SCARD_E_DUPLICATE_READER", "the reader is configured twice; fix /etc/reader.conf.d", .other),
        0x8010_001C: ("SCARD_E_CARD_UNSUPPORTED", "the reader does not support this card; use a MIFARE Classic card", .other),
        0x8010_001D: ("SCARD_E_NO_SERVICE", "pcscd is not running (or was restarted); start it (systemctl start pcscd) and retry", .serviceUnavailable),
        0x8010_001E: ("SCARD_E_SERVICE_STOPPED", "pcscd stopped; start it again and retry", .serviceUnavailable),
        0x8010_001F: ("SCARD_E_UNSUPPORTED_FEATURE", "the reader or pcscd does not support this feature", .other),
        0x8010_0020: ("SCARD_E_ICC_INSTALLATION", "no primary provider for the card", .other),
        0x8010_0021: ("SCARD_E_ICC_CREATEORDER", "the requested card creation order is not supported", .other),
        0x8010_0023: ("SCARD_E_DIR_NOT_FOUND", "a card directory was not found", .other),
        0x8010_0024: ("SCARD_E_FILE_NOT_FOUND", "a card file was not found", .other),
        0x8010_0025: ("SCARD_E_NO_DIR", "the card has no such directory", .other),
        0x8010_0026: ("SCARD_E_NO_FILE", "the card has no such file", .other),
        0x8010_0027: ("SCARD_E_NO_ACCESS", "access to the card file was denied", .other),
        0x8010_0028: ("SCARD_E_WRITE_TOO_MANY", "the card is full", .other),
        0x8010_0029: ("SCARD_E_BAD_SEEK", "seek error on the card file", .other),
        0x8010_002A: ("SCARD_E_INVALID_CHV", "the PIN is invalid", .other),
        0x8010_002B: ("SCARD_E_UNKNOWN_RES_MNG", "unknown resource manager error; \(restart)", .other),
        0x8010_002C: ("SCARD_E_NO_SUCH_CERTIFICATE", "no such certificate on the card", .other),
        0x8010_002D: ("SCARD_E_CERTIFICATE_UNAVAILABLE", "the certificate cannot be read", .other),
        0x8010_002E: ("SCARD_E_NO_READERS_AVAILABLE", "no reader is connected; plug the reader in (an ACR122U needs the pn533 modules blacklisted)", .readerUnavailable),
        0x8010_002F: ("SCARD_E_COMM_DATA_LOST", "data was lost talking to the card; present the card again and retry", .cardRemoved),
        0x8010_0030: ("SCARD_E_NO_KEY_CONTAINER", "no key container on the card", .other),
        0x8010_0031: ("SCARD_E_SERVER_TOO_BUSY", "pcscd is too busy; wait and retry", .noResponse),
        0x8010_0065: ("SCARD_W_UNSUPPORTED_CARD", "the reader cannot talk to this card (wrong ATR); use a MIFARE Classic card", .other),
        0x8010_0066: ("SCARD_W_UNRESPONSIVE_CARD", "the card does not answer; present it again, flat on the reader", .cardRemoved),
        0x8010_0067: ("SCARD_W_UNPOWERED_CARD", "the card is not powered; present it again", .cardRemoved),
        0x8010_0068: ("SCARD_W_RESET_CARD", "the card was reset by another program; reconnect and start the operation again", .cardRemoved),
        0x8010_0069: ("SCARD_W_REMOVED_CARD", "the card was removed; present it again (a write may or may not have happened)", .cardRemoved),
        0x8010_006A: ("SCARD_W_SECURITY_VIOLATION", "access was denied for security reasons", .other),
        0x8010_006B: ("SCARD_W_WRONG_CHV", "wrong PIN", .other),
        0x8010_006C: ("SCARD_W_CHV_BLOCKED", "the PIN is blocked", .other),
        0x8010_006D: ("SCARD_W_EOF", "end of the card file", .other),
        0x8010_006E: ("SCARD_W_CANCELLED_BY_USER", "cancelled by the user", .other),
        0x8010_006F: ("SCARD_W_CARD_NOT_AUTHENTICATED", "no PIN was presented to the card", .other),
    ]
}
