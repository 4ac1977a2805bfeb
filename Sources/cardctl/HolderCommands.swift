import ArgumentParser
import CampusCard
import Foundation

/// 一密两限 at the card office: the holder's limits and PIN (docs/card-layout.md "Holder limits and PIN").
extension Card {
    struct SetLimits: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-limits",
            abstract: "Set the holder's per-transaction and daily limits, above which a debit needs the PIN (card office: needs the loader master).",
            discussion: "Defaults: 50.00 per transaction, 100.00 a day. Each is 0.00 to 655.34 yuan; 0.00 asks for the PIN on every debit.")
        @OptionGroup var common: Common
        @Option(help: "Yuan, e.g. 50.00.") var perTransaction: String
        @Option(help: "Yuan, e.g. 100.00.") var daily: String

        func run() async throws {
            try await reportingFailures {
                let limits: HolderLimits
                do {
                    limits = try HolderLimits(perTransaction: Card.parse(perTransaction), daily: Card.parse(daily))
                } catch let error as CardOperationError { throw CLIError(.badInput, error.message) }
                try await Card.withOperations(common) { ops, _ in _ = try ops.setHolderLimits(limits) }
                Card.report(common, ["result": "limits-set", "perTransactionYuan": limits.perTransaction.yuan, "dailyYuan": limits.daily.yuan],
                            "limits set: \(limits.perTransaction.yuan) yuan per transaction, \(limits.daily.yuan) yuan a day")
            }
        }
    }

    struct SetPIN: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-pin",
            abstract: "Set the holder's PIN and reset its wrong-try counter (card office: needs the loader master).",
            discussion: "The PIN is typed at a prompt (twice), or read from the first line of stdin with --pin-stdin; never given as an argument. The card keeps a keyed verifier, never the PIN.")
        @OptionGroup var common: Common
        @Flag(help: "Read the PIN from the first line of stdin instead of prompting.") var pinStdin = false

        func run() async throws {
            try await reportingFailures {
                let pin = try PINInput.read(fromStdin: pinStdin, confirm: true)
                try await Card.withOperations(common) { ops, _ in _ = try ops.setPIN(pin) }
                Card.report(common, ["result": "pin-set"], "PIN set; wrong tries reset")
            }
        }
    }

    struct ResetPINTries: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "reset-pin-tries",
            abstract: "Unblock the holder's PIN: reset its wrong-try counter, keeping the PIN (card office: needs the loader master).")
        @OptionGroup var common: Common

        func run() async throws {
            try await reportingFailures {
                try await Card.withOperations(common) { ops, _ in _ = try ops.resetPINTries() }
                Card.report(common, ["result": "pin-tries-reset"], "PIN tries reset")
            }
        }
    }
}

/// Reads a PIN without putting it in argv: a prompt on the terminal (no echo), or stdin's first line.
enum PINInput {
    static func read(fromStdin: Bool, confirm: Bool) throws -> PIN {
        if fromStdin {
            guard let line = readLine(strippingNewline: true) else { throw CLIError(.badInput, "--pin-stdin: stdin is empty; give the PIN on its first line") }
            return try parse(line)
        }
        guard isatty(STDIN_FILENO) == 1 else {
            throw CLIError(.badInput, "no terminal to ask for the PIN on: give it on stdin with --pin-stdin")
        }
        let first = try parse(prompt("PIN: "))
        if confirm {
            guard try parse(prompt("PIN again: ")) == first else { throw CLIError(.badInput, "the two PINs differ; nothing was written") }
        }
        return first
    }

    static func parse(_ text: String) throws -> PIN {
        do { return try PIN(text) } catch let error as CardOperationError { throw CLIError(.badInput, error.message) }
    }

    private static func prompt(_ text: String) throws -> String {
        guard let answer = getpass(text) else { throw CLIError(.badInput, "could not read the PIN from the terminal") }
        return String(cString: answer)
    }
}
