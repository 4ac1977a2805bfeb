import CardSession

extension CardConnection {
    /// Opens the reader and card the command line chose (--reader, --profile).
    static func open(_ options: ReaderOptions) async throws -> CardConnection {
        try await open(reader: options.reader, profile: options.profile)
    }
}
