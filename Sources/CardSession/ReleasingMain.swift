import ArgumentParser
import PCSC

extension AsyncParsableCommand {
    /// ArgumentParser's entry point, with every PC/SC context released and its thread joined before the process
    /// exits, on every path: success, `exit(withError:)` for failures and --help, the end of a command after
    /// SIGINT/SIGTERM. Exiting with a thread still inside libpcsclite crashed cardctl (issue 8; HardwareNotes.md "Exit
    /// and libpcsclite"). Every executable that opens a PC/SC context calls this from its `main()`.
    public static func mainReleasingPCSC() async {
        do {
            var command = try await asyncParseAsRoot(nil)
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            PCSCContext.shutdownAll()
            exit(withError: error)
        }
        PCSCContext.shutdownAll()
    }
}
