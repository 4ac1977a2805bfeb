import ArgumentParser

/// cardctl's numbers: what each may be, and one line on what is wrong when it is not.
enum Numbers {
    /// `--terminal-id`: 1-65535 (the card records 16 bits; 0 names no terminal).
    static func terminalID(_ text: String) throws -> UInt16 {
        guard let id = UInt16(text), id > 0 else {
            throw ValidationError("a terminal id is a whole number 1-65535, unique per box (the card records 16 bits of it)")
        }
        return id
    }

    /// `--serial`, `--account`: what block 4 holds, a u32.
    static func cardNumber(_ what: String) -> @Sendable (String) throws -> UInt32 {
        { text in
            guard let value = UInt32(text) else {
                throw ValidationError("a \(what) is a whole number 0-4294967295 (the card records 32 bits of it)")
            }
            return value
        }
    }

    /// `--reference`: the settlement service's references are 1-2147483647; above are the terminals' own.
    static func settlementReference(_ text: String) throws -> UInt32 {
        guard let value = UInt32(text), value > 0, value < 0x8000_0000 else {
            throw ValidationError("a settlement reference is the settlement service's, a whole number 1-2147483647 (above are the terminals' own): give it, or leave --reference out")
        }
        return value
    }

    /// ArgumentParser reads an input such as `-1` as an option, and then says "Missing expected argument" or
    /// "Missing value": the first input before `--` that looks like a negative number, with what the value may be.
    static func negativeInput(in arguments: [String]) -> String? {
        let inputs = arguments.prefix { $0 != "--" }
        guard let index = inputs.firstIndex(where: looksNegative) else { return nil }
        let value = inputs[index]
        let previous = index > inputs.startIndex ? inputs[index - 1] : ""
        let words = Set(inputs)
        switch previous {
        case "--terminal-id": return "--terminal-id \(value): a terminal id is 1-65535, unique per box"
        case "--serial", "--account": return "\(previous) \(value): a card \(previous.dropFirst(2)) is a whole number 0-4294967295"
        case "--reference": return "--reference \(value): a settlement reference is the settlement service's, 1-2147483647"
        case "--reader": return "--reader \(value): give a reader's name or its index (0, 1, ...) from `cardctl readers`"
        default: break
        }
        if words.contains("card") {
            return "\(value): an amount is positive yuan with at most two decimals, e.g. 12.50 (debit takes money off, load adds it)"
        }
        if words.contains("value") && words.contains("set") {
            return "\(value) would be read as an option: put `--` before a negative value, e.g. cardctl value set BLOCK -- \(value)"
        }
        if words.contains("value") && (words.contains("inc") || words.contains("dec")) {
            return "\(value): an amount is 0-2147483647: use `inc` to add and `dec` to take off"
        }
        return "\(value): block numbers, amounts and ids are never negative"
    }

    /// `-1`, `-0.5`, `-.5`, `-0x10`.
    static func looksNegative(_ input: String) -> Bool {
        input.wholeMatch(of: /-(\d+(\.\d*)?|\.\d+|0[xX][0-9a-fA-F]+)/) != nil
    }
}
