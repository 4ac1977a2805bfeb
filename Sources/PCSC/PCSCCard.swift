import CPCSCLite
import Dispatch
import Foundation
import SmartCard

/// A connection to the card on one reader. Keeps its context alive; disconnects (leaving the card, on the context's
/// thread) if dropped while still connected. Calls after the context is shut down throw `invalidHandle`.
public final class PCSCCard: @unchecked Sendable {
    public let context: PCSCContext
    public let reader: String
    // Mutated only on the context's thread.
    private var handle: SCARDHANDLE
    private var connected = true
    public private(set) var activeProtocol: CardProtocol
    /// The card's ATR at connect (or the last reconnect).
    public private(set) var atr: [UInt8] = []

    init(context: PCSCContext, reader: String, handle: SCARDHANDLE, activeProtocol: CardProtocol) {
        self.context = context
        self.reader = reader
        self.handle = handle
        self.activeProtocol = activeProtocol
        atr = (try? statusNow().atr) ?? []
    }

    deinit {
        // On the context's thread, whichever thread drops the card: queued before the context's own release (the
        // card holds the context until this deinit ends). Dropped once the context is shut down: SCardReleaseContext
        // has then released the card handles too.
        guard connected else { return }
        let handle = handle
        context.worker.async { _ = SCardDisconnect(handle, DWORD(SCARD_LEAVE_CARD)) }
    }

    /// Runs a whole card session synchronously on the context's thread: one hop for any number of APDUs.
    public func perform<T: Sendable>(_ body: @escaping @Sendable (PCSCChannel) throws -> T) async throws -> T {
        try await context.run { try body(PCSCChannel(card: self)) }
    }

    /// Sends one APDU (one hop onto the context's thread).
    public func transmit(_ command: [UInt8]) async throws -> [UInt8] {
        try await context.run { try self.transmitNow(command) }
    }

    func transmitNow(_ command: [UInt8]) throws -> [UInt8] {
        precondition(context.worker.isCurrent, "PC/SC calls run on the context's thread")
        let pci: UnsafePointer<SCARD_IO_REQUEST> = activeProtocol == .t0 ? onecard_pci_t0() : activeProtocol == .raw ? onecard_pci_raw() : onecard_pci_t1()
        var length = DWORD(258)
        var result: LONG = 0
        // One allocation per APDU: the response array is written in place and trimmed.
        var response = [UInt8](unsafeUninitializedCapacity: 258) { buffer, count in
            result = command.withUnsafeBufferPointer { apdu in
                SCardTransmit(handle, pci, apdu.baseAddress, DWORD(apdu.count), nil, buffer.baseAddress, &length)
            }
            count = result == SCARD_S_SUCCESS ? Int(length) : 0
        }
        try check(result)
        // Through vpcd, a card leaving mid-APDU comes back as success with no bytes at all (pcsc-lite 1.9.9,
        // vsmartcard 3.3; see HardwareNotes.md). Every real response has at least a status word.
        guard !response.isEmpty else { throw PCSCError.notTransacted }
        response.reserveCapacity(0)
        return response
    }

    /// SCardReconnect: e.g. `.reset` to select the card again after a failed MIFARE authentication.
    public func reconnect(share: ShareMode = .shared, protocols: CardProtocol = .any, initialization: Disposition = .reset) async throws {
        try await context.run { try self.reconnectNow(share: share, protocols: protocols, initialization: initialization) }
    }

    func reconnectNow(share: ShareMode = .shared, protocols: CardProtocol = .any, initialization: Disposition) throws {
        var active: DWORD = 0
        try check(SCardReconnect(handle, share.rawValue, protocols.rawValue, initialization.rawValue, &active))
        activeProtocol = CardProtocol(rawValue: active)
        atr = (try? statusNow().atr) ?? atr
    }

    /// Disconnects; the handle is unusable afterwards.
    public func disconnect(_ disposition: Disposition = .leave) async throws {
        try await context.run {
            guard self.connected else { return }
            self.connected = false
            try check(SCardDisconnect(self.handle, disposition.rawValue))
        }
    }

    /// Runs `body` inside SCardBeginTransaction/SCardEndTransaction: no other program talks to the card meanwhile.
    public func withTransaction<T: Sendable>(ending disposition: Disposition = .leave, _ body: @escaping @Sendable (PCSCChannel) throws -> T) async throws -> T {
        try await context.run {
            try check(SCardBeginTransaction(self.handle))
            defer { _ = SCardEndTransaction(self.handle, disposition.rawValue) }
            return try body(PCSCChannel(card: self))
        }
    }

    /// SCardControl with `SCARD_CTL_CODE(code)` (reader escape commands; ACS needs libccid's ifdDriverOptions 0x0001).
    public func control(code: UInt32, _ command: [UInt8]) async throws -> [UInt8] {
        try await context.run {
            var response = [UInt8](repeating: 0, count: 264)
            var length: DWORD = 0
            try check(SCardControl(self.handle, onecard_ctl_code(DWORD(code)), command, DWORD(command.count), &response, DWORD(response.count), &length))
            return Array(response.prefix(Int(length)))
        }
    }

    /// A reader attribute (SCardGetAttrib), e.g. `.vendorName`.
    public func attribute(_ attribute: ReaderAttribute) async throws -> [UInt8] {
        try await context.run {
            var length: DWORD = 0
            try check(SCardGetAttrib(self.handle, attribute.id, nil, &length))
            var buffer = [UInt8](repeating: 0, count: Int(length))
            try check(SCardGetAttrib(self.handle, attribute.id, &buffer, &length))
            return Array(buffer.prefix(Int(length)))
        }
    }

    /// SCardStatus: the reader name, card state bits and ATR as pcscd sees them now.
    public func status() async throws -> (reader: String, state: UInt32, atr: [UInt8]) {
        try await context.run { try self.statusNow() }
    }

    func statusNow() throws -> (reader: String, state: UInt32, atr: [UInt8]) {
        var nameLength: DWORD = 256
        var name = [CChar](repeating: 0, count: 256)
        var state: DWORD = 0
        var proto: DWORD = 0
        var atr = [UInt8](repeating: 0, count: 33)
        var atrLength = DWORD(atr.count)
        try check(SCardStatus(handle, &name, &nameLength, &state, &proto, &atr, &atrLength))
        let reader = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return (reader, UInt32(truncatingIfNeeded: state), Array(atr.prefix(Int(atrLength))))
    }
}

/// The synchronous channel a card session gets inside `PCSCCard.perform`; valid only inside that closure.
public struct PCSCChannel: CardChannel, Sendable {
    let card: PCSCCard

    public func transmit(_ command: [UInt8]) throws -> [UInt8] { try card.transmitNow(command) }

    /// Reconnects inside the session, e.g. `.reset` to re-select a card halted by a failed authentication.
    public func reconnect(initialization: Disposition) throws { try card.reconnectNow(initialization: initialization) }
}

/// Reader attributes worth showing a technician.
public struct ReaderAttribute: Sendable, Hashable {
    let id: DWORD
    public static let vendorName = ReaderAttribute(id: onecard_attr_vendor_name())
    public static let vendorVersion = ReaderAttribute(id: onecard_attr_vendor_ifd_version())
    public static let vendorSerial = ReaderAttribute(id: onecard_attr_vendor_ifd_serial())
    public static let atr = ReaderAttribute(id: onecard_attr_atr_string())
    public static let channelID = ReaderAttribute(id: onecard_attr_channel_id())
    public static let maxInput = ReaderAttribute(id: onecard_attr_maxinput())
}
