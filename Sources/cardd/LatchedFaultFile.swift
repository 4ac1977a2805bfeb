import Foundation
import Logging

/// A water controller's latched fault (a leak, a valve that could not be driven), kept in a file beside the terminal
/// store so that a restart — a crash, an update, a power cut — does not open the valve a leak closed. Only an
/// operator's `clear-fault` (`cardctl daemon clear-fault`) removes it.
struct LatchedFaultFile {
    let path: String

    init(store: String) { path = store + "-water-fault" }

    func load() -> String? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        let message = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        // A file there but empty or unreadable is still a fault: fail closed.
        return message.isEmpty ? "a fault latched before the restart (\(path))" : message
    }

    /// Writes (atomically, synced) or removes the file; a failure is logged, and the fault stays latched in memory.
    func save(_ message: String?, logger: Logger) {
        do {
            if let message {
                try Data((message + "\n").utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
                // The file, then its directory (the rename that put it there): a power cut after this keeps it.
                for synced in [path, (path as NSString).deletingLastPathComponent] {
                    let fd = open(synced, O_RDONLY)
                    if fd >= 0 { fsync(fd); close(fd) }
                }
            } else if FileManager.default.fileExists(atPath: path) {
                try FileManager.default.removeItem(atPath: path)
            }
        } catch {
            logger.error("cannot keep the latched fault in \(path): \(error); a restart would not latch it again: check the disk")
        }
    }
}
