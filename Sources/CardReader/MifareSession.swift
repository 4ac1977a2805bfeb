import SmartCard
import MifareClassic

/// One card session: MIFARE Classic operations over a channel, in the fewest APDUs the reader profile allows.
///
/// Synchronous and not thread-safe by design: a session runs whole on the thread that owns the channel
/// (a PC/SC context's queue, or a test's thread). It remembers which keys sit in which reader slots and which
/// sector is authenticated, so it sends LOAD KEYS and AUTHENTICATE only when needed.
public final class MifareSession {
    public let channel: any CardChannel
    public let profile: ReaderProfile
    public let size: CardSize
    /// Command APDUs sent through this session.
    public private(set) var apduCount = 0

    private var slots: [MifareKey?]
    private var nextSlot = 0
    private var authenticated: (sector: Int, keyType: KeyType)?
    /// The key of the current authentication, to authenticate again after a refused multi-block read.
    private var authenticatedKey: MifareKey?
    /// Cleared when the reader refuses a multi-block read: this session then reads block by block.
    private var multiBlockReads = true

    public init(channel: any CardChannel, profile: ReaderProfile, size: CardSize = .classic1K) {
        self.channel = channel
        self.profile = profile
        self.size = size
        self.slots = Array(repeating: nil, count: max(1, min(profile.keySlots, 2)))
    }

    /// The sector authenticated now, and with which key type.
    public var authenticatedSector: (sector: Int, keyType: KeyType)? { authenticated }

    // MARK: Transport

    /// Sends one command; counts it; transport errors propagate unchanged.
    @discardableResult
    public func send(_ command: CommandAPDU) throws -> ResponseAPDU {
        apduCount += 1
        return try channel.transmit(command)
    }

    // MARK: Identity

    /// The card's UID (4 or 7 bytes) via GET DATA.
    public func uid() throws -> [UInt8] {
        let response = try send(StorageCardCommand.getUID)
        guard response.statusWord.isSuccess, [4, 7, 10].contains(response.data.count) else {
            throw MifareError(.unexpectedResponse,
                              "the reader did not return the card's UID: the card may have left the field; present it again",
                              statusWord: response.statusWord)
        }
        return response.data
    }

    // MARK: Authentication

    /// Authenticates `sector` with the given key, loading it into a reader slot first unless a slot already holds it.
    /// Does nothing when the sector is already authenticated with that key type in this session.
    public func authenticate(sector: Int, keyType: KeyType, key: MifareKey) throws {
        guard size.contains(sector: sector) else {
            throw MifareError(.blockOutOfRange, "sector \(sector) does not exist on a \(size): use 0...\(size.sectorCount - 1)")
        }
        if let current = authenticated, current.sector == sector, current.keyType == keyType,
           slots.contains(where: { $0 == key }) {
            return
        }
        let slot = try load(key)
        authenticated = nil
        let block = size.trailerBlock(ofSector: sector)
        let response = try send(StorageCardCommand.authenticate(block: block, keyType: keyType, slot: slot))
        guard response.statusWord.isSuccess else {
            throw MifareError(.authenticationFailed,
                              "authentication of sector \(sector) with \(keyType) failed: the key is wrong for this card "
                                + "or the card moved; check the key (or try `cardctl keys try`) and hold the card still",
                              statusWord: response.statusWord)
        }
        authenticated = (sector, keyType)
        authenticatedKey = key
    }

    /// Loads a key into a slot unless one holds it already; returns the slot.
    private func load(_ key: MifareKey) throws -> Int {
        if let slot = slots.firstIndex(where: { $0 == key }) { return slot }
        let slot = nextSlot
        nextSlot = (nextSlot + 1) % slots.count
        let response = try send(StorageCardCommand.loadKey(key, slot: slot, structure: profile.keyStructure))
        guard response.statusWord.isSuccess else {
            slots[slot] = nil
            throw MifareError(.keyNotLoaded,
                              "the reader refused to load a key into slot \(slot): the reader profile \(profile.kind) "
                                + "may be wrong for this reader; choose another with --profile",
                              statusWord: response.statusWord)
        }
        slots[slot] = key
        return slot
    }

    /// Forgets the authentication state (after the card was reset or re-presented).
    public func forgetAuthentication() { authenticated = nil }

    // MARK: Blocks

    /// Reads one 16-byte block of the authenticated sector.
    public func read(block: Int) throws -> [UInt8] {
        try requireAuthenticated(block: block, for: "read")
        let response = try send(StorageCardCommand.read(block: block))
        try check(response, operation: "read", block: block)
        guard response.data.count == 16 else {
            throw MifareError(.unexpectedResponse,
                              "reading block \(block) returned \(response.data.count) bytes instead of 16: the reader "
                                + "profile may be wrong; retry, or choose another with --profile")
        }
        return response.data
    }

    /// Reads data blocks of the authenticated sector, in one APDU when they are consecutive and the profile reads
    /// several blocks at once (ACR1252U: 3), else one APDU per block.
    public func read(blocks: [Int]) throws -> [[UInt8]] {
        let consecutive = zip(blocks, blocks.dropFirst()).allSatisfy { $1 == $0 + 1 }
        guard multiBlockReads, let first = blocks.first, blocks.count > 1, blocks.count <= profile.blocksPerRead, consecutive,
              blocks.allSatisfy({ size.sector(ofBlock: $0) == size.sector(ofBlock: first) && !size.isTrailer($0) })
        else { return try blocks.map { try read(block: $0) } }
        try requireAuthenticated(block: first, for: "read")
        let response = try send(StorageCardCommand.read(block: first, count: blocks.count))
        if !response.statusWord.isSuccess, let current = authenticated, let key = authenticatedKey {
            // Multiple Blocks Mode is documented for the ACR1252U family but unproven on real units: if this reader
            // refuses it, read block by block from now on, authenticating again in case the refusal dropped it.
            multiBlockReads = false
            authenticated = nil
            try authenticate(sector: current.sector, keyType: current.keyType, key: key)
            return try blocks.map { try read(block: $0) }
        }
        try check(response, operation: "read", block: first)
        guard response.data.count == 16 * blocks.count else {
            throw MifareError(.unexpectedResponse,
                              "reading blocks \(first)–\(blocks.last!) returned \(response.data.count) bytes instead of \(16 * blocks.count): the reader "
                                + "profile may be wrong; retry, or choose another with --profile")
        }
        return blocks.indices.map { Array(response.data[16 * $0..<16 * ($0 + 1)]) }
    }

    /// Writes one 16-byte block of the authenticated sector.
    public func write(block: Int, _ data: [UInt8]) throws {
        guard data.count == 16 else {
            throw MifareError(.unexpectedResponse, "a block is 16 bytes, \(data.count) were given: give exactly 32 hex digits")
        }
        try requireAuthenticated(block: block, for: "write")
        let response = try send(StorageCardCommand.update(block: block, data: data))
        try check(response, operation: "write", block: block)
    }

    // MARK: Value blocks

    /// Reads a value block's value (ACS: `FF B1`; other readers: READ BINARY and decode).
    public func readValue(block: Int) throws -> Int32 {
        if profile.valueCommands == .acs {
            try requireAuthenticated(block: block, for: "read the value of")
            let response = try send(StorageCardCommand.acsReadValue(block: block))
            try check(response, operation: "read the value of", block: block)
            guard response.data.count == 4 else {
                throw MifareError(.notValueBlock, "block \(block) did not answer a 4-byte value: it is probably not a value block")
            }
            return response.data.reduce(Int32(0)) { $0 << 8 | Int32($1) }
        }
        return try decodeValueBlock(read(block: block), block: block)
    }

    /// Increments a value block by `amount` and transfers the result into the same block.
    public func increment(block: Int, by amount: Int32) throws {
        try valueOperation(block: block, amount: amount, increment: true)
    }

    /// Decrements a value block by `amount` and transfers the result into the same block.
    public func decrement(block: Int, by amount: Int32) throws {
        try valueOperation(block: block, amount: amount, increment: false)
    }

    private func valueOperation(block: Int, amount: Int32, increment: Bool) throws {
        let verb = increment ? "increment" : "decrement"
        guard amount >= 0 else {
            throw MifareError(.unexpectedResponse, "cannot \(verb) by a negative amount (\(amount))")
        }
        let command: CommandAPDU
        switch profile.valueCommands {
        case .acs:
            command = StorageCardCommand.acsValue(increment ? .increment : .decrement, block: block, value: amount)
        case .omnikey:
            command = increment
                ? StorageCardCommand.omnikeyIncrement(block: block, by: amount)
                : StorageCardCommand.omnikeyDecrement(block: block, by: amount)
        case .none:
            throw unsupported(verb)
        }
        try requireAuthenticated(block: block, for: verb)
        let response = try send(command)
        try check(response, operation: verb, block: block)
    }

    /// Whether `copyValue(from:to:)` has a native command on this reader.
    public var canCopyValue: Bool { profile.valueCommands == .acs }

    /// Copies a value block onto another block of the same sector (restore + transfer; ACS only).
    public func copyValue(from source: Int, to destination: Int) throws {
        guard profile.valueCommands == .acs else { throw unsupported("copy a value block (restore + transfer)") }
        guard size.sector(ofBlock: source) == size.sector(ofBlock: destination) else {
            throw MifareError(.unexpectedResponse, "restore and transfer must stay in one sector: blocks \(source) and \(destination) are not")
        }
        try requireAuthenticated(block: source, for: "restore")
        let response = try send(StorageCardCommand.acsRestore(from: source, to: destination))
        try check(response, operation: "copy the value into", block: destination)
    }

    // MARK: Checks

    private func unsupported(_ what: String) -> MifareError {
        MifareError(.unsupportedByReader,
                    "the \(profile.name) profile has no command to \(what): use a reader with native value operations "
                        + "(ACS ACR122U/ACR1252U, OMNIKEY 5422) or override with --profile if this reader has them")
    }

    private func requireAuthenticated(block: Int, for operation: String) throws {
        guard size.contains(block: block) else {
            throw MifareError(.blockOutOfRange, "block \(block) does not exist on a \(size): use 0...\(size.blockCount - 1)")
        }
        let sector = size.sector(ofBlock: block)
        guard let current = authenticated, current.sector == sector else {
            throw MifareError(.notAuthenticated,
                              "cannot \(operation) block \(block): sector \(sector) is not authenticated in this session; authenticate first")
        }
    }

    private func check(_ response: ResponseAPDU, operation: String, block: Int) throws {
        let sw = response.statusWord
        if sw.isSuccess { return }
        let keyType = authenticated?.keyType ?? .a
        switch sw {
        case .operationFailed where profile.reportsFailuresAsGeneric, .securityStatusNotSatisfied, .commandNotAllowed:
            // ACS readers answer 63 00 for refused access, lost authentication and a card that left alike.
            if sw == .operationFailed { authenticated = nil }
            throw MifareError(.accessDenied,
                              "the card refused to \(operation) block \(block) with \(keyType): the sector's access conditions "
                                + "do not allow it (or the block is read-only, or the card moved); use the key they allow",
                              statusWord: sw)
        case .memoryFailure, .blockNotFound:
            throw MifareError(.blockOutOfRange, "block \(block) does not exist on this card", statusWord: sw)
        case .functionNotSupported, .instructionNotSupported, .classNotSupportedAlt:
            throw unsupported(operation)
        default:
            throw MifareError(.unexpectedResponse,
                              "the reader answered \(sw) (\(sw.meaning)) to \(operation) block \(block); retry, "
                                + "and check the reader profile (--profile)",
                              statusWord: sw)
        }
    }
}

