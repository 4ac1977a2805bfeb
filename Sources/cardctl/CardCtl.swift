import ArgumentParser
import BuildInfo
import CardSession
import PCSC

/// `cardctl`: the field technician's tool for readers, cards and dumps.
@main
struct CardCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cardctl",
        abstract: "Diagnose contactless readers and MIFARE Classic campus cards.",
        discussion: """
            Exit status: 0 ok (a money operation: done, even when a step after its commit failed: see the warnings), \
            1 failed, 2 no reader, pcscd or daemon (cardd), 3 no card or card removed, 4 wrong key, 5 refused by the card or reader, \
            6 bad input, 7 a money operation's outcome is undetermined (its commit write went unanswered: tap the card \
            again on this terminal, with this --journal, to learn it), 64 bad arguments. With --json a money operation \
            prints {"outcome": "done" | "not-done" | "undetermined", ...} whatever its exit status.
            """,
        version: BuildInfo.versionLine,
        subcommands: [
            Readers.self, Watch.self, Info.self, Dump.self, Restore.self, ReadBlock.self, WriteBlock.self,
            Value.self, Keys.self, KeystoreCommand.self, Card.self, JournalCommand.self, BlacklistCommand.self,
            DaemonCommand.self, PosCommand.self, WaterMeterCommand.self, OfficeCommand.self,
        ]
    )

    /// ArgumentParser's entry point, plus: a negative number (which ArgumentParser reads as an unknown option, then
    /// reports a missing argument) is refused first with what the value may be; and every PC/SC context thread has
    /// released its context and ended before the process exits, on every path (success, `exit(withError:)` for
    /// failures and --help, the end of `watch` after SIGINT/SIGTERM). Exiting with one still inside libpcsclite
    /// crashed cardctl (issue 8; HardwareNotes.md).
    static func main() async {
        if let problem = Numbers.negativeInput(in: Array(CommandLine.arguments.dropFirst())) {
            printError("cardctl: \(problem)")
            Self.exit(withError: ExitCode.validationFailure)
        }
        await mainReleasingPCSC()
    }
}
