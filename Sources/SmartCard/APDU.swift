/// A command APDU in short form (ISO 7816-4): header, optional data, optional Le.
public struct CommandAPDU: Hashable, Sendable, CustomStringConvertible {
    public var cla: UInt8
    public var ins: UInt8
    public var p1: UInt8
    public var p2: UInt8
    public var data: [UInt8]
    /// Expected response length; `0` means "up to 256"; `nil` omits Le.
    public var le: UInt8?

    public init(cla: UInt8, ins: UInt8, p1: UInt8, p2: UInt8, data: [UInt8] = [], le: UInt8? = nil) {
        precondition(data.count <= 255, "short APDUs carry at most 255 data bytes")
        self.cla = cla
        self.ins = ins
        self.p1 = p1
        self.p2 = p2
        self.data = data
        self.le = le
    }

    /// The bytes on the wire: `CLA INS P1 P2 [Lc data] [Le]`.
    public var bytes: [UInt8] {
        var bytes: [UInt8] = [cla, ins, p1, p2]
        bytes.reserveCapacity(5 + data.count + 1)
        if !data.isEmpty {
            bytes.append(UInt8(data.count))
            bytes.append(contentsOf: data)
        }
        if let le { bytes.append(le) }
        return bytes
    }

    /// Parses a short-form command APDU; `nil` when the length byte does not match the rest.
    public init?(bytes: [UInt8]) {
        guard bytes.count >= 4 else { return nil }
        let header = (bytes[0], bytes[1], bytes[2], bytes[3])
        let body = bytes.dropFirst(4)
        var data: [UInt8] = []
        var le: UInt8?
        switch body.count {
        case 0: break
        case 1: le = body.first
        default:
            let lc = Int(body.first!)
            guard lc > 0 else { return nil }
            if body.count == 1 + lc {
                data = Array(body.dropFirst())
            } else if body.count == 2 + lc {
                data = Array(body.dropFirst().prefix(lc))
                le = body.last
            } else {
                return nil
            }
        }
        self.init(cla: header.0, ins: header.1, p1: header.2, p2: header.3, data: data, le: le)
    }

    /// The indices of `data` that hold key material, never printed: all of a PC/SC Part 3 LOAD KEYS (`FF 82`); key A
    /// (bytes 0–5) and key B (10–15) of an UPDATE BINARY (`FF D6`) of a MIFARE Classic sector trailer (block 3 of
    /// each 4-block sector below block 128, block 15 of each 16-block sector above).
    public var keyDataIndices: [Int] {
        guard cla == 0xFF else { return [] }
        if ins == 0x82 { return Array(data.indices) }
        let block = Int(p1) << 8 | Int(p2)
        if ins == 0xD6, data.count == 16, block < 256, block < 128 ? block % 4 == 3 : block % 16 == 15 {
            return Array(0..<6) + Array(10..<16)
        }
        return []
    }

    /// Whether the command carries key material (`keyDataIndices` is not empty).
    public var carriesKey: Bool { !keyDataIndices.isEmpty }

    /// Hex text, e.g. `FF B0 00 04 10`, safe for logs and traces: key bytes (`keyDataIndices`) are shown as `**`.
    public var description: String {
        let masked = Set(keyDataIndices)
        guard !masked.isEmpty else { return Hex.encode(bytes, separator: " ") }
        let dataText = data.enumerated().map { masked.contains($0.offset) ? "**" : Hex.encode([$0.element], separator: " ") }
        let header = Hex.encode([cla, ins, p1, p2, UInt8(data.count)], separator: " ")
        return ([header] + dataText + (le.map { [Hex.encode([$0], separator: " ")] } ?? [])).joined(separator: " ")
    }
}

extension CommandAPDU: CustomReflectable {
    /// `dump()` and debuggers show the redacted description, never the key bytes.
    public var customMirror: Mirror { Mirror(self, children: ["apdu": description], displayStyle: .struct) }
}

/// A response APDU: data then the status word.
public struct ResponseAPDU: Hashable, Sendable, CustomStringConvertible {
    public var data: [UInt8]
    public var statusWord: StatusWord

    public init(data: [UInt8], statusWord: StatusWord) {
        self.data = data
        self.statusWord = statusWord
    }

    /// Splits raw response bytes; `nil` when fewer than two bytes came back.
    public init?(bytes: [UInt8]) {
        guard bytes.count >= 2 else { return nil }
        self.data = Array(bytes.dropLast(2))
        self.statusWord = StatusWord(sw1: bytes[bytes.count - 2], sw2: bytes[bytes.count - 1])
    }

    public var bytes: [UInt8] { data + [statusWord.sw1, statusWord.sw2] }

    public var description: String {
        data.isEmpty ? statusWord.description : Hex.encode(data, separator: " ") + " " + statusWord.description
    }
}
