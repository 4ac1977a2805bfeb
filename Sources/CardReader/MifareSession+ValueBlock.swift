import MifareClassic

extension MifareSession {
    func decodeValueBlock(_ data: [UInt8], block: Int) throws -> Int32 {
        guard let valueBlock = try? ValueBlock(block: data) else {
            throw MifareError(.notValueBlock,
                              "block \(block) is not in value-block format (value, inverted value, address copies disagree)")
        }
        return valueBlock.value
    }

    /// Writes `value` as a value block (needs write permission on the block); `address` is the user byte kept in it.
    public func storeValue(block: Int, value: Int32, address: UInt8? = nil) throws {
        try write(block: block, ValueBlock(value: value, address: address ?? UInt8(truncatingIfNeeded: block)).block)
    }

}
