//! An operator's session in mongosh through shardgate: the sh.* helpers
//! build a cluster and sh.status() shows it.

mod support;

use shardgate_router::RouterConfig;
use support::RouterHandle;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sh_helpers_then_sh_status_show_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let shards = support::start_shards(dir.path(), 3, false).await;
    let router = RouterHandle::start(&dir.path().join("config"), RouterConfig::default()).await;
    let script = format!(
        r#"
sh.addShard("{a}");
sh.addShard("{b}");
sh.addShard("{c}");
sh.enableSharding("shop", "shard0001");
sh.shardCollection("shop.orders", {{customerId: 1}});
sh.splitAt("shop.orders", {{customerId: "m"}});
sh.addShardToZone("shard0000", "EU");
sh.addShardToZone("shard0002", "US");
sh.updateZoneKeyRange("shop.orders", {{customerId: "a"}}, {{customerId: "c"}}, "EU");
sh.addTagRange("shop.orders", {{customerId: "x"}}, {{customerId: "z"}}, "US");
sh.stopBalancer();
const st = sh.status().value;
const shop = st.databases.find(d => d.database._id === "shop");
const orders = shop.collections["shop.orders"];
print(JSON.stringify({{
  shards: st.shards.map(s => s._id + "=" + (s.tags || []).join(",")),
  balancer: st.balancer["Currently enabled"],
  mongoses: Object.keys(st).filter(k => k.endsWith("mongoses")).map(k => JSON.stringify(st[k])),
  primary: shop.database.primary,
  shardKey: orders.shardKey,
  chunks: orders.chunks.map(c => c["on shard"] + ":" + EJSON.stringify(c.min)),
  chunkMetadata: orders.chunkMetadata,
  tags: orders.tags.map(t => t.tag + ":" + JSON.stringify(t.min) + "-" + JSON.stringify(t.max)),
}}));
sh.status();
"#,
        a = shards[0].address(),
        b = shards[1].address(),
        c = shards[2].address()
    );
    let out = support::mongosh(&router.uri(), &script);
    let json_line = out
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no status line in: {out}"));
    let status: serde_json::Value = serde_json::from_str(json_line).unwrap();
    assert_eq!(
        status["shards"],
        serde_json::json!(["shard0000=EU", "shard0001=", "shard0002=US"])
    );
    assert_eq!(status["balancer"], "no");
    assert!(
        status["mongoses"][0].as_str().unwrap().contains("8.0.0"),
        "{status}"
    );
    assert_eq!(status["primary"], "shard0001");
    assert_eq!(status["shardKey"], serde_json::json!({"customerId": 1}));
    assert_eq!(
        status["chunks"],
        serde_json::json!([
            "shard0001:{\"customerId\":{\"$minKey\":1}}",
            "shard0001:{\"customerId\":\"m\"}"
        ])
    );
    assert_eq!(
        status["chunkMetadata"],
        serde_json::json!([{"shard": "shard0001", "nChunks": 2}])
    );
    assert_eq!(
        status["tags"],
        serde_json::json!([
            "EU:{\"customerId\":\"a\"}-{\"customerId\":\"c\"}",
            "US:{\"customerId\":\"x\"}-{\"customerId\":\"z\"}"
        ])
    );
    // The printed report a person reads names the collection and its zones.
    assert!(out.contains("shop.orders"), "{out}");
    assert!(out.contains("shardKey"), "{out}");
}
