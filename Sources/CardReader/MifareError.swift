import SmartCard
import MifareClassic

/// A MIFARE Classic operation the reader or card refused, with a code and a one-line message saying what failed,
/// why, and what to do. Transport failures (card removed, reader gone, pcscd restarted) are not wrapped: they reach
/// the caller as the channel's own `TransportError`.
public struct MifareError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable {
        /// Authentication failed: wrong key, wrong key type, or the card moved.
        case authenticationFailed = "authentication-failed"
        /// The sector's access conditions (or block 0 being read-only) refused the operation.
        case accessDenied = "access-denied"
        /// The block's sector was not authenticated in this session.
        case notAuthenticated = "not-authenticated"
        /// The block or sector does not exist on this card.
        case blockOutOfRange = "block-out-of-range"
        /// The block is not in value-block format.
        case notValueBlock = "not-value-block"
        /// The reader profile has no command for this operation.
        case unsupportedByReader = "unsupported-by-reader"
        /// The reader refused to load the key (slot or key structure).
        case keyNotLoaded = "key-not-loaded"
        /// Wrong length or a status word that fits none of the above.
        case unexpectedResponse = "unexpected-response"
    }

    public var code: Code
    /// What failed, why, and what to do, in one line. Never contains key bytes.
    public var message: String
    /// The status word the reader answered, when there was one.
    public var statusWord: StatusWord?

    public init(_ code: Code, _ message: String, statusWord: StatusWord? = nil) {
        self.code = code
        self.message = message
        self.statusWord = statusWord
    }

    public var description: String {
        if let statusWord { return "\(message) [\(code.rawValue), SW \(statusWord)]" }
        return "\(message) [\(code.rawValue)]"
    }
}
