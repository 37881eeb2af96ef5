# pragma version 0.4.3
"""
@title ERC-7053 commit registry
@notice An interoperable digital-media indexing registry (ERC-7053): anyone may record a
        commit against an asset CID; the Commit event is the record. ComputeProof anchors
        its ledger checkpoints here (assetCid: the log's origin; commitData: the checkpoint
        as canonical JSON). Numbers Mainnet runs a contract with the same interface.
"""

# Bounds Vyper needs for strings; the ABI types are plain `string`. 10240 bytes matches the
# Capture API's 10 KB limit on custom commit data.
MAX_CID: constant(uint256) = 256
MAX_DATA: constant(uint256) = 10240

event Commit:
    recorder: indexed(address)
    assetCid: indexed(String[MAX_CID])
    commitData: String[MAX_DATA]


@external
def commit(assetCid: String[MAX_CID], commitData: String[MAX_DATA]) -> uint256:
    """
    @notice Record `commitData` against `assetCid`; return the block number it lands in.
    """
    log Commit(recorder=msg.sender, assetCid=assetCid, commitData=commitData)
    return block.number
