//! Listing every fragment, page by page, shard by shard.

use super::Store;
use crate::error::StoreError;
use crate::shard::Request;
use crate::types::{FragmentId, FragmentInfo};
use std::collections::VecDeque;

impl Store {
    /// Every fragment, shard by shard in key order, fetched in pages.
    pub fn list(&self) -> ListIter<'_> {
        ListIter {
            store: self,
            shard: 0,
            after: None,
            page: VecDeque::new(),
        }
    }
}

/// Streams [`FragmentInfo`]s page by page; see [`Store::list`].
#[derive(Debug)]
pub struct ListIter<'a> {
    store: &'a Store,
    shard: usize,
    after: Option<FragmentId>,
    page: VecDeque<FragmentInfo>,
}

impl Iterator for ListIter<'_> {
    type Item = Result<FragmentInfo, StoreError>;
    fn next(&mut self) -> Option<Self::Item> {
        const PAGE: usize = 1024;
        loop {
            if let Some(info) = self.page.pop_front() {
                return Some(Ok(info));
            }
            if self.shard >= self.store.shards.len() {
                return None;
            }
            let after = self.after;
            let page = self
                .store
                .call(self.shard as u32, |reply| Request::List {
                    after,
                    limit: PAGE,
                    reply,
                })
                .wait();
            match page {
                Err(e) => {
                    self.shard = self.store.shards.len();
                    return Some(Err(e));
                }
                Ok(page) => {
                    if page.len() < PAGE {
                        self.shard += 1;
                        self.after = None;
                    } else {
                        self.after = page.last().map(|i| i.key);
                    }
                    self.page = page.into();
                }
            }
        }
    }
}
