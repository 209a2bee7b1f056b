//! Atlas Search through the router: the search index commands
//! (`createSearchIndexes`, `updateSearchIndex`, `dropSearchIndex`,
//! `listSearchIndexes`) and the `$search`, `$searchMeta`, `$vectorSearch`
//! and `$listSearchIndexes` stages need a search service (mongot), which
//! shardgate is not configured with. They get what a community mongos
//! without one answers: SearchNotEnabled (31082), on any collection,
//! sharded or not.

use bson::RawDocument;

use crate::error::RouterError;
use crate::session::Request;

/// What a mongos without a search service answers the index commands and
/// `$listSearchIndexes`.
const INDEX_MESSAGE: &str = "Using Atlas Search Database Commands and the $listSearchIndexes aggregation stage requires additional configuration. Please connect to Atlas or an AtlasCLI local deployment to enable. For more information on how to connect, see https://dochub.mongodb.org/core/atlas-cli-deploy-local-reqs.";

/// … and the query stages.
const QUERY_MESSAGE: &str = "Using $search and $vectorSearch aggregation stages requires additional configuration. Please connect to Atlas or an AtlasCLI local deployment to enable. For more information on how to connect, see https://dochub.mongodb.org/core/atlas-cli-deploy-local-reqs.";

/// The refusal for `req`, if it needs the search service.
pub(crate) fn refusal(req: &Request<'_>) -> Option<RouterError> {
    let message = match req.name {
        "createSearchIndexes" | "updateSearchIndex" | "dropSearchIndex" | "listSearchIndexes" => {
            INDEX_MESSAGE
        }
        "aggregate" => return stage_refusal(req.body),
        _ => return None,
    };
    Some(RouterError::command(31082, "SearchNotEnabled", message))
}

/// The refusal of the first search stage of an `aggregate`'s pipeline, or
/// of `$listSampledQueries` anywhere but in `aggregate: 1` on `admin`
/// (InvalidNamespace, as mongos answers).
fn stage_refusal(body: &RawDocument) -> Option<RouterError> {
    let pipeline = body.get_array("pipeline").ok()?;
    pipeline.into_iter().flatten().find_map(|stage| {
        let (name, _) = stage.as_document()?.iter().next()?.ok()?;
        let message = match name.as_str() {
            "$listSearchIndexes" => INDEX_MESSAGE,
            "$search" | "$searchMeta" | "$vectorSearch" => QUERY_MESSAGE,
            "$listSampledQueries" => return Some(RouterError::command(
                73,
                "InvalidNamespace",
                "$listSampledQueries must be run against the 'admin' database with {aggregate: 1}",
            )),
            _ => return None,
        };
        Some(RouterError::command(31082, "SearchNotEnabled", message))
    })
}
