import SmartCard

/// The in-process transport: a `CardChannel` straight into an `EmulatedReader`, for fast unit tests.
/// A removed or silent card becomes an `EmulatedTransportError`, as a PC/SC transport would report it.
public struct EmulatedChannel: CardChannel, Sendable {
    public let reader: EmulatedReader

    public init(reader: EmulatedReader) { self.reader = reader }

    public func transmit(_ command: [UInt8]) throws -> [UInt8] {
        if reader.currentCard == nil { throw EmulatedTransportError(transportFailure: .cardRemoved) }
        switch reader.handle(command) {
        case .response(let bytes): return bytes
        case .cardRemoved: throw EmulatedTransportError(transportFailure: .cardRemoved)
        case .silent: throw EmulatedTransportError(transportFailure: .noResponse)
        }
    }

    /// Re-selects the card, as a PC/SC reconnect with reset does.
    public func reselect() throws {
        if reader.currentCard == nil { throw EmulatedTransportError(transportFailure: .cardRemoved) }
        reader.resetCard()
    }
}

/// What the in-process transport reports instead of a response.
public struct EmulatedTransportError: TransportError, Hashable, CustomStringConvertible {
    public var transportFailure: TransportFailure
    public init(transportFailure: TransportFailure) { self.transportFailure = transportFailure }
    public var description: String {
        switch transportFailure {
        case .cardRemoved: return "the card left the emulated reader's field: present it again"
        case .noResponse: return "the emulated reader did not answer (fault injected): reset it"
        default: return "emulated transport failure: \(transportFailure)"
        }
    }
}
