import ArgumentParser
import CampusCard
import CardReader
import CardSession
import MifareClassic
import SmartCard

/// A failure cardctl reports itself: one line (what, why, what to do) and an exit status.
struct CLIError: Error, CustomStringConvertible {
    /// Exit statuses a technician's script can test.
    enum Status: Int32 {
        case failed = 1, noReader = 2, noCard = 3, wrongKey = 4, refused = 5, badInput = 6, undetermined = 7
    }
    var status: Status
    var message: String
    init(_ status: Status, _ message: String) {
        self.status = status
        self.message = message
    }
    var description: String { message }
}

/// Runs a command body and turns any error into one line on stderr and a non-zero exit status.
func reportingFailures(_ body: () async throws -> Void) async throws {
    do { try await body() } catch { throw exitCode(reporting: error) }
}

/// `reportingFailures` for a synchronous command body.
func reportingFailuresSync(_ body: () throws -> Void) throws {
    do { try body() } catch { throw exitCode(reporting: error) }
}

/// An `ExitCode` as it is; any other error printed as one line on stderr and turned into its exit status.
func exitCode(reporting error: any Error) -> ExitCode {
    if let error = error as? ExitCode { return error }
    let (status, message) = explain(error)
    printError("cardctl: \(message)")
    return ExitCode(status.rawValue)
}

func explain(_ error: any Error) -> (CLIError.Status, String) {
    switch error {
    case let error as CLIError:
        return (error.status, error.message)
    case let error as ReaderSessionError:
        switch error.code {
        case .noReader: return (.noReader, error.message)
        case .noCard: return (.noCard, error.message)
        case .unsupportedCard, .badInput: return (.badInput, error.message)
        }
    case let error as CardOperationError:
        return (error.code == .journal ? .failed : .refused, error.message)
    case let error as MifareError:
        switch error.code {
        case .authenticationFailed: return (.wrongKey, error.description)
        case .accessDenied, .unsupportedByReader, .notAuthenticated: return (.refused, error.description)
        case .blockOutOfRange: return (.badInput, error.description)
        default: return (.failed, error.description)
        }
    case let error as any TransportError:
        switch error.transportFailure {
        case .cardRemoved: return (.noCard, "\(error)")
        case .readerUnavailable, .serviceUnavailable, .readerBusy: return (.noReader, "\(error)")
        default: return (.failed, "\(error)")
        }
    default:
        return (.failed, "\(error)")
    }
}
