import MifareClassic
import SmartCard

/// How a torn command treats the EEPROM: the normal path, or one of the tear effects.
enum WriteMode {
    case normal
    case torn(TearEffect, seed: UInt64)
}

/// The reader firmware of one `ReaderKind` driving one MIFARE Classic card: decodes the pseudo-APDU, applies
/// the card's datasheet semantics and answers with the status words that reader family uses.
///
/// Independent of `CardReader` on purpose: it decodes what `CardReader` encodes, so a mistake on one side shows.
struct Firmware {
    let kind: ReaderKind
    let card: EmulatedCard
    var mode: WriteMode = .normal
    /// The reader's key slots (they belong to the reader, not the card).
    var keySlots: [Int: [UInt8]]
    /// Number of EEPROM block writes this command performed (writes and transfers).
    private(set) var blockWrites = 0

    init(kind: ReaderKind, card: EmulatedCard, keySlots: [Int: [UInt8]], mode: WriteMode) {
        self.kind = kind
        self.card = card
        self.keySlots = keySlots
        self.mode = mode
    }

    private var isACS: Bool { kind == .acr122u || kind == .acr1252u }

    /// Status words: ACS answers 63 00 to nearly every failure; the others use the specific Part 3 words.
    private func failure(_ specific: StatusWord) -> [UInt8] {
        let sw = isACS ? StatusWord.operationFailed : specific
        return [sw.sw1, sw.sw2]
    }

    private let ok: [UInt8] = [0x90, 0x00]

    mutating func process(_ apdu: [UInt8]) -> [UInt8] {
        guard apdu.count >= 4 else { return failure(.wrongLength) }
        guard apdu[0] == 0xFF else { return isACS ? failure(.classNotSupported) : [0x6E, 0x00] }
        let (ins, p1, p2) = (apdu[1], apdu[2], apdu[3])
        let body = apdu.count > 5 ? Array(apdu[5...]) : []
        let lc = apdu.count > 4 ? Int(apdu[4]) : 0
        if apdu.count > 5 && body.count != lc { return failure(.wrongLength) }

        switch ins {
        case 0xCA: return getData(p1: p1)
        case 0x82: return loadKey(structure: p1, slot: p2, key: body)
        case 0x86:
            guard body.count == 5, body[0] == 0x01 else { return failure(.wrongLength) }
            return authenticate(block: Int(body[2]), keyCode: body[3], slot: Int(body[4]))
        case 0x88 where apdu.count == 6:
            // Obsolete PC/SC 2.01 AUTHENTICATE: FF 88 00 BLK KT KN.
            return authenticate(block: Int(p2), keyCode: apdu[4], slot: Int(apdu[5]))
        case 0xB0 where kind == .acr1252u && p1 == 0x00 && apdu.count == 5 && apdu[4] > 0x10 && apdu[4] % 0x10 == 0:
            return readMultiple(from: Int(p2), count: Int(apdu[4]) / 16)
        case 0xB0:
            guard p1 == 0x00, apdu.count == 5, apdu[4] == 0x10 || apdu[4] == 0x00 else { return failure(.wrongLength) }
            return read(block: Int(p2))
        case 0xD6:
            guard p1 == 0x00, body.count == 16 else { return failure(.wrongLength) }
            return write(block: Int(p2), data: body)
        case 0xD7 where isACS:
            return acsValue(block: Int(p2), body: body)
        case 0xB1 where isACS:
            guard apdu.count == 5, apdu[4] == 0x04 else { return failure(.wrongLength) }
            return acsReadValue(block: Int(p2))
        case 0xD4 where kind == .omnikey5422, 0xD8 where kind == .omnikey5422:
            guard body.count == 4 else { return failure(.wrongLength) }
            let amount = Int32(bitPattern: UInt32(body[0]) | UInt32(body[1]) << 8 | UInt32(body[2]) << 16 | UInt32(body[3]) << 24)
            return valueOperation(block: Int(p2), amount: amount, increment: ins == 0xD4, destination: Int(p2))
        case 0x00 where p1 == 0x48 && isACS:
            // Firmware version: ASCII, and on the ACR122U no status word at all.
            return kind == .acr122u ? Array("ACR122U215".utf8) : Array("ACR1252U_V2.0".utf8) + ok
        case 0x00 where isACS && (p1 == 0x40 || p1 == 0x52 || p1 == 0x50 || p1 == 0x51):
            return ok  // LED/buzzer, beep on detection, polling parameters: accepted, nothing to emulate
        default:
            return isACS ? failure(.instructionNotSupported) : [0x6D, 0x00]
        }
    }

    // MARK: Commands

    private func getData(p1: UInt8) -> [UInt8] {
        switch p1 {
        case 0x00: return card.uid + ok
        default: return [0x6A, 0x81]
        }
    }

    private mutating func loadKey(structure: UInt8, slot: UInt8, key: [UInt8]) -> [UInt8] {
        guard key.count == 6 else { return failure(.wrongLength) }
        let (expectedStructure, slots): (UInt8, Int) = kind == .omnikey5422 ? (0x20, 32) : (0x00, 2)
        guard structure == expectedStructure else { return failure(.commandNotAllowed) }
        guard Int(slot) < slots else { return failure(.invalidKeyNumber) }
        keySlots[Int(slot)] = key
        return ok
    }

    private func authenticate(block: Int, keyCode: UInt8, slot: Int) -> [UInt8] {
        guard let keyType = KeyType(authenticationCode: keyCode) else { return failure(.commandNotAllowed) }
        guard card.size.contains(block: block) else { return failure(.blockNotFound) }
        guard let key = keySlots[slot] else { return failure(.invalidKeyNumber) }
        let sector = card.size.sector(ofBlock: block)
        card.authenticated = nil
        // A halted card (after a failed authentication or refused command) answers nothing until re-selected.
        guard !card.halted else { return failure(.authenticationFailed) }
        let trailer = card.block(card.size.trailerBlock(ofSector: sector))
        let stored = keyType == .a ? Array(trailer[0..<6]) : Array(trailer[10..<16])
        // A sector with inconsistent access bits is locked for good: no authentication succeeds.
        guard (try? AccessBits(bytes: Array(trailer[6..<9]))) != nil, stored == key else {
            card.halted = true
            return failure(.authenticationFailed)
        }
        card.authenticated = (sector, keyType)
        return ok
    }

    /// The access bits and key of the authenticated sector containing `block`, or a failure response.
    private func session(for block: Int) -> Result<(AccessBits, KeyType), Refusal> {
        guard card.size.contains(block: block) else { return .failure(Refusal(failure(.blockNotFound))) }
        guard !card.halted, let current = card.authenticated, current.sector == card.size.sector(ofBlock: block) else {
            return .failure(Refusal(failure(.securityStatusNotSatisfied)))
        }
        let trailer = card.block(card.size.trailerBlock(ofSector: current.sector))
        guard let bits = try? AccessBits(bytes: Array(trailer[6..<9])) else { return .failure(Refusal(failure(.securityStatusNotSatisfied))) }
        return .success((bits, current.keyType))
    }

    struct Refusal: Error { let response: [UInt8]; init(_ response: [UInt8]) { self.response = response } }

    /// The card refuses: it NAKs and halts, so the reader must select it again.
    private func refuse(_ sw: StatusWord) -> [UInt8] {
        card.halted = true
        card.authenticated = nil
        return failure(sw)
    }

    private func read(block: Int) -> [UInt8] {
        let (bits, key): (AccessBits, KeyType)
        switch session(for: block) {
        case .failure(let refusal): return refusal.response
        case .success(let value): (bits, key) = value
        }
        var data = card.block(block)
        if card.size.isTrailer(block) {
            if key == .b && bits.keyBIsReadable { return refuse(.securityStatusNotSatisfied) }
            // Key A never reads back; access bits and key B only where the trailer table allows.
            for i in 0..<6 { data[i] = 0 }
            if !bits.permitsTrailer(.read, .accessBits, key: key) { for i in 6..<10 { data[i] = 0 } }
            if !bits.permitsTrailer(.read, .keyB, key: key) { for i in 10..<16 { data[i] = 0 } }
            return data + ok
        }
        guard bits.permits(.read, group: card.size.accessGroup(ofBlock: block), key: key) else {
            return refuse(.securityStatusNotSatisfied)
        }
        return data + ok
    }

    /// ACS Multiple Blocks Mode: consecutive data blocks of one sector (at most 3 on a 1K card, 15 in a 4K large
    /// sector); the manuals say trailers are not read this way, so a range that includes one fails.
    private func readMultiple(from block: Int, count: Int) -> [UInt8] {
        let blocks = Array(block..<block + count)
        guard blocks.allSatisfy({ $0 < card.size.blockCount && !card.size.isTrailer($0) && card.size.sector(ofBlock: $0) == card.size.sector(ofBlock: block) })
        else { return failure(.wrongLength) }
        var data: [UInt8] = []
        for number in blocks {
            let answer = read(block: number)
            guard answer.suffix(2) == ok[...] else { return answer }
            data += answer.dropLast(2)
        }
        return data + ok
    }

    private mutating func write(block: Int, data: [UInt8]) -> [UInt8] {
        let (bits, key): (AccessBits, KeyType)
        switch session(for: block) {
        case .failure(let refusal): return refusal.response
        case .success(let value): (bits, key) = value
        }
        if block == 0 && !card.isMagic { return refuse(.securityStatusNotSatisfied) }
        if card.size.isTrailer(block) {
            if key == .b && bits.keyBIsReadable { return refuse(.securityStatusNotSatisfied) }
            let mayKeyA = bits.permitsTrailer(.write, .keyA, key: key)
            let mayBits = bits.permitsTrailer(.write, .accessBits, key: key)
            let mayKeyB = bits.permitsTrailer(.write, .keyB, key: key)
            guard mayKeyA || mayBits || mayKeyB else { return refuse(.securityStatusNotSatisfied) }
            // The card writes the fields the conditions allow and keeps the others.
            var new = card.block(block)
            if mayKeyA { new.replaceSubrange(0..<6, with: data[0..<6]) }
            if mayBits { new.replaceSubrange(6..<10, with: data[6..<10]) }
            if mayKeyB { new.replaceSubrange(10..<16, with: data[10..<16]) }
            commit(block, new)
            return ok
        }
        guard bits.permits(.write, group: card.size.accessGroup(ofBlock: block), key: key) else {
            return refuse(.securityStatusNotSatisfied)
        }
        commit(block, data)
        return ok
    }

    /// Increment/decrement `block` and transfer into `destination`.
    private mutating func valueOperation(block: Int, amount: Int32, increment: Bool, destination: Int) -> [UInt8] {
        let (bits, key): (AccessBits, KeyType)
        switch session(for: block) {
        case .failure(let refusal): return refusal.response
        case .success(let value): (bits, key) = value
        }
        let group = card.size.accessGroup(ofBlock: block)
        guard !card.size.isTrailer(block), !card.size.isTrailer(destination),
              bits.permits(increment ? .increment : .decrement, group: group, key: key),
              bits.permits(.transfer, group: card.size.accessGroup(ofBlock: destination), key: key)
        else { return refuse(.securityStatusNotSatisfied) }
        guard amount >= 0, let source = try? ValueBlock(block: card.block(block)) else { return refuse(.incompatibleStructure) }
        let (result, overflow) = increment ? source.value.addingReportingOverflow(amount) : source.value.subtractingReportingOverflow(amount)
        guard !overflow else { return refuse(.incompatibleStructure) }
        commit(destination, ValueBlock(value: result, address: source.address).block)
        return ok
    }

    private mutating func acsValue(block: Int, body: [UInt8]) -> [UInt8] {
        if body.count == 2 && body[0] == 0x03 {
            // Restore from `block`, transfer into body[1] (same sector).
            let destination = Int(body[1])
            guard card.size.contains(block: destination), card.size.sector(ofBlock: destination) == card.size.sector(ofBlock: block) else {
                return failure(.blockNotFound)
            }
            let (bits, key): (AccessBits, KeyType)
            switch session(for: block) {
            case .failure(let refusal): return refusal.response
            case .success(let value): (bits, key) = value
            }
            guard !card.size.isTrailer(destination),
                  bits.permits(.restore, group: card.size.accessGroup(ofBlock: block), key: key),
                  bits.permits(.transfer, group: card.size.accessGroup(ofBlock: destination), key: key)
            else { return refuse(.securityStatusNotSatisfied) }
            guard let source = try? ValueBlock(block: card.block(block)) else { return refuse(.incompatibleStructure) }
            commit(destination, source.block)
            return ok
        }
        guard body.count == 5 else { return failure(.wrongLength) }
        let value = Int32(bitPattern: UInt32(body[1]) << 24 | UInt32(body[2]) << 16 | UInt32(body[3]) << 8 | UInt32(body[4]))
        switch body[0] {
        case 0x00: return write(block: block, data: ValueBlock(value: value, address: UInt8(truncatingIfNeeded: block)).block)
        case 0x01: return valueOperation(block: block, amount: value, increment: true, destination: block)
        case 0x02: return valueOperation(block: block, amount: value, increment: false, destination: block)
        default: return failure(.wrongParameters)
        }
    }

    private func acsReadValue(block: Int) -> [UInt8] {
        let response = read(block: block)
        guard response.count == 18 else { return response }
        guard let value = try? ValueBlock(block: Array(response[0..<16])) else { return failure(.incompatibleStructure) }
        let raw = UInt32(bitPattern: value.value)
        return [UInt8(raw >> 24), UInt8(raw >> 16 & 0xFF), UInt8(raw >> 8 & 0xFF), UInt8(raw & 0xFF)] + ok
    }

    // MARK: EEPROM

    /// Writes a block, or tears the write as the armed effect says.
    private mutating func commit(_ block: Int, _ data: [UInt8]) {
        if case .torn(.notExecuted, _) = mode { return }
        blockWrites += 1
        switch mode {
        case .normal, .torn(.executed, _):
            card.setBlock(block, data)
        case .torn(.notExecuted, _), .torn(.leftOld, _):
            break
        case .torn(.garbled, let seed):
            card.setBlock(block, Self.garbage(seed: seed, block: block))
        }
    }

    /// Deterministic "garbled EEPROM" bytes: a half-written block is neither old nor new.
    static func garbage(seed: UInt64, block: Int) -> [UInt8] {
        var state = seed &+ UInt64(block) &* 0x9E37_79B9_7F4A_7C15
        return (0..<16).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt8(truncatingIfNeeded: state >> 56)
        }
    }
}
