//! `directory`: the user directory search and the profile proxy: whether to ask the
//! homeserver too, whether to match 3PIDs, what to add to profiles, and the size of
//! the search cache.

use super::reader::Section;

/// `directory`: the user directory search and profile proxy.
/// Default `directory.searchCache`: searches whose results are remembered until
/// the index next changes.
pub const DEFAULT_SEARCH_CACHE: usize = 10_000;

#[derive(Debug, Clone)]
pub struct DirectoryConfig {
    /// `directory.exclude.homeserver`: answer from the local index only.
    pub exclude_homeserver: bool,
    /// `directory.exclude.threepid`: do not match on e-mail addresses and phone numbers.
    pub exclude_threepid: bool,
    /// `directory.profile.displayName`: fill a profile's missing display name from the
    /// directory.
    pub profile_display_name: bool,
    /// `directory.profile.threepids`: add the directory's 3PIDs to profiles, for
    /// authenticated users of `matrix.domain` only.
    pub profile_threepids: bool,
    /// `directory.searchCache`: searches whose results are remembered until the index
    /// changes (0: none).
    pub search_cache: usize,
}

pub(crate) fn read_directory(s: &Section<'_, '_>) -> Option<DirectoryConfig> {
    let exclude = s.section("exclude");
    let exclude_homeserver = exclude.bool("homeserver").unwrap_or(false);
    let exclude_threepid = exclude.bool("threepid").unwrap_or(false);
    exclude.finish(&[]);
    let profile = s.section("profile");
    let profile_display_name = profile.bool("displayName").unwrap_or(true);
    let profile_threepids = profile.bool("threepids").unwrap_or(false);
    profile.finish(&[]);
    let search_cache = s.u64("searchCache").unwrap_or(DEFAULT_SEARCH_CACHE as u64);
    s.finish(&[]);
    if search_cache > 1_000_000 {
        s.problem("searchCache", "must be at most 1000000 (entries)");
        return None;
    }
    Some(DirectoryConfig {
        search_cache: usize::try_from(search_cache).unwrap_or(DEFAULT_SEARCH_CACHE),
        exclude_homeserver,
        exclude_threepid,
        profile_display_name,
        profile_threepids,
    })
}
