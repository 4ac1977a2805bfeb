import Foundation

/// The wire's JSON (docs/settlement-api.yaml): dates as whole Unix seconds (integers), amounts as integer fen, keys
/// sorted (stable bodies). Both ends of the API use these.
public enum SettlementJSON {
    public static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(Int64(date.timeIntervalSince1970.rounded(.down)))
        }
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    public static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            let seconds = try container.decode(Int64.self)
            guard (0...4_102_444_800).contains(seconds) else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "\(seconds) is not a Unix time between 1970 and 2100")
            }
            return Date(timeIntervalSince1970: TimeInterval(seconds))
        }
        return decoder
    }
}
