//! The dashboard: each feed's card, from `worker::status` plus what only
//! the page shows (the trend's SVG, whether search is behind).

use super::*;

/// A feed's card on the dashboard: its health and what only the page shows.
#[derive(serde::Serialize)]
pub(super) struct FeedCard {
    #[serde(flatten)]
    health: crate::worker::status::FeedHealth,
    trend_svg: Option<String>,
    search_behind: bool,
    search_done: u64,
    search_todo: u64,
}

pub(super) async fn dashboard(
    State(state): State<Arc<WebState>>,
    LoggedIn { admin, csrf }: LoggedIn,
) -> Response {
    let config = &state.engine.config;
    let feeds: Result<Vec<FeedCard>, _> = config
        .feeds
        .iter()
        .map(|f| {
            let health = crate::worker::status::feed_health(config, f, Some(&state.engine.store))?;
            let search = state.engine.search.status(&f.name, &state.engine.store);
            Ok::<_, crate::store::StoreError>(FeedCard {
                trend_svg: trend::svg(&health.trend),
                search_behind: !search.current,
                search_done: search.done,
                search_todo: search.todo,
                health,
            })
        })
        .collect();
    match feeds {
        Ok(feeds) => state.render(
            "dashboard.html",
            context! { admin => admin, csrf => csrf, feeds => feeds },
        ),
        Err(e) => {
            tracing::error!(error = %e, "the feeds cannot be read");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the store cannot be read; see the server log",
            )
                .into_response()
        }
    }
}
