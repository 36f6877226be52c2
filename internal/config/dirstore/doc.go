// Package dirstore is the standalone control plane's config.ConfigStore: Istio YAML in a
// directory (recursively; hidden names skipped, as config.ReadFiles does), watched with
// fsnotify so that creates, writes, deletes, renames, editors' atomic saves and
// ConfigMap-style "..data" symlink swaps all trigger a reload after a short debounce.
//
// Last good config is kept per file. Each file is accepted or refused as a whole: a
// reload loads the new content of every changed file together with the last accepted
// content of every other file, and when that does not validate, the changed files named
// by the problems are refused (their last accepted content, or their absence when they
// are new, stays in force) and the rest are tried again. When the problems only name
// files that did not change (a change broke a reference, e.g. a deleted mesh config
// that an AuthorizationPolicy's CUSTOM provider needs), every changed file is refused.
// So the snapshot in force is always one whole configuration that validates, built
// from the accepted version of every file; nothing is half-applied, and one bad file
// does not hold back good changes to other files. Deleting a file is a change like any
// other: refused if the remaining files do not validate without it.
//
// Startup is stricter: Run fails when the first load finds any invalid file, because
// there is no last good version to keep and starting without a file's DENY policies
// would fail open.
//
// Refusals are logged (one line per problem, in the `meshguard ctl validate` form) and
// kept in Status until the file changes again. A Store is safe for concurrent use; New
// starts nothing, Run does the work until its context ends.
package dirstore
