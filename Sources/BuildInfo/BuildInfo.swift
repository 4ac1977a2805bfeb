/// What every OneCard executable reports for `--version`.
///
/// `commit` is generated at build time by BuildInfoPlugin (scripts/build-info-commit): the git commit of the
/// package, with `-dirty` when tracked files had changes, `unknown` when built outside git.
public enum BuildInfo {
    /// The release version; raise it when cutting a release.
    public static let version = "0.5.0"

    /// `0.5.0 (commit 1a2b…)`: the text `--version` prints.
    public static var versionLine: String { "\(version) (commit \(commit))" }
}
