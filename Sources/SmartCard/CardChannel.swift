/// Something that carries one APDU to a card and brings its response back: a PC/SC card handle,
/// the in-process emulator, a test script.
///
/// `transmit` is synchronous and may block: callers run whole card sessions on a thread that is
/// allowed to block (a PC/SC context's own thread), never on the Swift cooperative pool.
/// Errors are the transport's own (a PC/SC error, "card removed"); a status word other than
/// `90 00` is not an error at this level.
public protocol CardChannel {
    /// Sends a command APDU's bytes and returns the response bytes, status word included.
    func transmit(_ command: [UInt8]) throws -> [UInt8]
}

extension CardChannel {
    /// Sends a command and parses the response; a response shorter than two bytes is a `MalformedResponse`.
    public func transmit(_ command: CommandAPDU) throws -> ResponseAPDU {
        let bytes = try transmit(command.bytes)
        guard let response = ResponseAPDU(bytes: bytes) else {
            throw MalformedResponse(command: command, bytes: bytes)
        }
        return response
    }
}

/// The reader answered with fewer than the two status bytes every response must end with.
public struct MalformedResponse: Error, CustomStringConvertible {
    public var instruction: UInt8
    public var byteCount: Int

    public init(command: CommandAPDU, bytes: [UInt8]) {
        self.instruction = command.ins
        self.byteCount = bytes.count
    }

    public var description: String {
        "the reader answered INS \(Hex.encode([instruction])) with \(byteCount) byte(s), no status word: "
            + "the reader or its driver is misbehaving; unplug and replug it, then retry"
    }
}

/// The reader families whose firmware the project knows. The emulator emulates each of them;
/// `CardReader.ReaderProfile` holds what each can do.
public enum ReaderKind: String, CaseIterable, Sendable, Codable, CustomStringConvertible {
    /// ACS ACR122U (PN532 inside; CCID; `FF D7` value operations; two volatile key slots).
    case acr122u
    /// ACS ACR1252U (same ACS pseudo-APDU family as the ACR122U).
    case acr1252u
    /// HID OMNIKEY 5422 (`FF D4`/`FF D8` increment/decrement; 32 non-volatile key slots).
    case omnikey5422
    /// Any PC/SC Part 3 reader: storage-card commands only, no native value operations.
    case generic

    public var description: String { rawValue }
}

/// How a transport failed, in the terms a card operation needs to decide what to do next.
public enum TransportFailure: Sendable, Hashable {
    /// The card left the field (before, during or after the command: the outcome of a write is unknown).
    case cardRemoved
    /// The reader is gone (unplugged) or was never there.
    case readerUnavailable
    /// The reader or card did not answer in time.
    case noResponse
    /// The PC/SC service is not running or was restarted; the context must be re-established.
    case serviceUnavailable
    /// Another process holds the reader exclusively.
    case readerBusy
    /// Anything else.
    case other
}

/// An error thrown by a `CardChannel` that can say which `TransportFailure` it is.
public protocol TransportError: Error {
    var transportFailure: TransportFailure { get }
}
