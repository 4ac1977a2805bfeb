import Foundation
import GRDB

/// A terminal store error: a code to match on and a one-line message (what, why, what to do).
public struct TerminalStoreError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable, CaseIterable {
        /// The store file cannot be opened or created (permissions, a directory in the way, a missing file when not
        /// creating).
        case cannotOpen = "cannot-open"
        /// The file is not an SQLite database, or fails `PRAGMA quick_check`, or holds values no entry can hold.
        case corrupt
        /// The file was written by a newer version of this code (migrations this one does not know).
        case newerSchema = "newer-schema"
        /// The file system is (nearly) full: a write was refused before it started, or SQLite answered SQLITE_FULL.
        case diskFull = "disk-full"
        /// Another process holds the store's write lock longer than the busy timeout.
        case busy
        /// `record` with a terminal sequence already recorded.
        case sequenceReused = "sequence-reused"
        /// No entry with that terminal sequence.
        case unknownSequence = "unknown-sequence"
        /// `complete` with an outcome different from the one already recorded.
        case conflictingOutcome = "conflicting-outcome"
        /// Every 32-bit terminal sequence has been issued.
        case sequencesExhausted = "sequences-exhausted"
        /// An upload-queue change for an entry that is not in the queue (still open, or unknown).
        case notInQueue = "not-in-queue"
        /// A blacklist version lower than the one the store has.
        case staleBlacklist = "stale-blacklist"
        /// An argument no entry can hold (a UID that is not hex, a negative limit).
        case badInput = "bad-input"
        /// Any other SQLite or file-system failure.
        case failed
    }

    public var code: Code
    public var message: String
    /// The underlying error's text, when the message summarises one (kept for logs, not repeated in `message`).
    public var cause: String?

    public init(_ code: Code, _ message: String, cause: String? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String { message }
}

/// What the store was doing when SQLite failed: picks the message (a failed `record` means no card write; a failed
/// `complete` means the intent stays open).
enum StoreOperation {
    case open, nextSequence, record(UInt32), complete(UInt32), queue, blacklist, importing, prune, read

    var diskFullMessage: String {
        switch self {
        case .record(let sequence):
            "the disk is full: the tap (terminal sequence \(sequence)) was refused before any card write; free space on the store's file system (old logs, exports), then tap again"
        case .nextSequence:
            "the disk is full: no terminal sequence could be issued, so the tap was refused before any card write; free space on the store's file system, then tap again"
        case .complete(let sequence):
            "the disk is full: the outcome of terminal sequence \(sequence) was not recorded; the intent stays open and the card's next tap here decides it; free space on the store's file system"
        case .open:
            "the disk is full: the terminal store cannot be opened for writing; free space on its file system, then start again"
        case .queue, .blacklist, .importing, .prune, .read:
            "the disk is full: the terminal store could not write; nothing was changed; free space on its file system, then retry"
        }
    }
}

extension TerminalStoreError {
    /// Classifies an error from GRDB/SQLite (`TerminalStoreError`s pass through unchanged).
    static func from(_ error: any Error, during operation: StoreOperation, path: String) -> TerminalStoreError {
        if let error = error as? TerminalStoreError { return error }
        guard let database = error as? DatabaseError else {
            return TerminalStoreError(.failed, "the terminal store \(path) failed (\(error)); check the file and its directory, then retry", cause: "\(error)")
        }
        let cause = "SQLite \(database.extendedResultCode.rawValue): \(database.message ?? "no message")"
        switch database.resultCode {
        case .SQLITE_FULL:
            return TerminalStoreError(.diskFull, operation.diskFullMessage, cause: cause)
        case .SQLITE_NOTADB, .SQLITE_CORRUPT:
            return corrupt(path: path, why: database.message ?? "not an SQLite database")
        case .SQLITE_BUSY, .SQLITE_LOCKED:
            return TerminalStoreError(.busy, "the terminal store \(path) is locked by another process (\(cause)); stop the other writer (cardd or cardctl), then retry", cause: cause)
        case .SQLITE_CANTOPEN, .SQLITE_PERM, .SQLITE_READONLY, .SQLITE_AUTH:
            return TerminalStoreError(.cannotOpen, "the terminal store \(path) cannot be opened for writing (\(cause)); run as the daemon's user or fix the permissions of the file and its directory", cause: cause)
        default:
            return TerminalStoreError(.failed, "the terminal store \(path) failed (\(cause)); check the file and its directory, then retry", cause: cause)
        }
    }

    static func corrupt(path: String, why: String) -> TerminalStoreError {
        TerminalStoreError(.corrupt, "the terminal store \(path) is corrupt (\(why)): keep the file for the card office, restore from backup or move it aside; cardd will not start on it", cause: why)
    }
}
