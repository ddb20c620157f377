"""Fusion settings: every threshold of the floor tracker, the association and checkout, with its reason.

Defaults are what the evaluation on simulator sessions was tuned with; a store can override them in a YAML
file given to ``walkout fusion --config``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class FloorConfig(_Cfg):
    process_noise: float = Field(1.5, gt=0, title="Acceleration noise", description="m/s^2, constant-velocity KF")
    min_meas_sd: float = Field(0.05, gt=0, title="Minimum measurement sd", description="m, added to floor_cov")
    gate_chi2: float = Field(16.0, gt=0, title="Gate", description="Mahalanobis^2 gate for a new camera track")
    link_gate_chi2: float = Field(60.0, gt=0, title="Link gate",
                                  description="Mahalanobis^2 gate for a (camera, track) already linked")
    link_bonus: float = Field(0.2, gt=0, le=1, title="Link bonus",
                              description="Cost factor for an existing (camera, track) link: keeps ids sticky")
    lost_after_s: float = Field(1.0, gt=0, title="Lost after", description="Seconds unseen before 'lost'")
    vanish_after_s: float = Field(120.0, gt=0, title="Vanished after",
                                  description="Seconds a shopper may stay lost away from the exit before they "
                                              "are taken as gone unseen: their visit closes and goes to review")
    recover_radius_m: float = Field(1.5, gt=0, title="Recovery radius",
                                    description="Base radius to give a lost shopper a new camera track")
    recover_speed_mps: float = Field(1.2, ge=0, title="Recovery speed",
                                     description="Radius grows by this per second lost")
    handoff_chi2: float = Field(40.0, gt=0, title="Hand-off gate",
                                description="Mahalanobis^2 within which a left-over track joins an active shopper "
                                            "this camera does not see right now")
    recover_max_m: float = Field(6.0, gt=0, title="Recovery limit",
                                 description="Largest radius for giving a lost shopper a track away from the gate")
    head_height_m: float = Field(1.60, gt=0.5, lt=2.5, title="Typical head height",
                                 description="Prior head height of a new shopper, metres")
    head_height_sd_m: float = Field(0.15, gt=0, title="Head height spread", description="Its prior sd")
    head_height_range: tuple[float, float] = Field((1.0, 2.1), title="Head height bounds",
                                                   description="The filtered head height stays within these")
    head_height_noise: float = Field(0.05, ge=0, title="Head height noise",
                                     description="How fast the head height may change (crouch, lean), m/sqrt(s)")
    crouch_sd_m: float = Field(0.45, ge=0, title="Crouch spread",
                               description="How far a head may drop or rise at once when a shopper crouches to a "
                                           "low shelf or stands up (m): a track left over by the matching that "
                                           "fits an active shopper only with the head height this much less sure "
                                           "joins them instead of becoming a new shopper (0: never)")
    crouch_trigger_chi2: float = Field(1.0, ge=0, title="Crouch trigger",
                                       description="A matched head ray this far (Mahalanobis^2) from its shopper "
                                                   "(0: never) ...")
    crouch_explains: float = Field(0.8, ge=0, le=1, title="Crouch explains",
                                   description="... that the head height crouch_sd_m less sure brings below this "
                                               "fraction of it moves the head height, not the position: the ray "
                                               "of a crouching shopper's head would otherwise drag them along it")
    min_head_conf: float = Field(0.3, ge=0, le=1, title="Head confidence",
                                 description="Head keypoints below this are not used as rays")
    head_ray_sd_m: float = Field(0.04, gt=0, title="Head ray sd",
                                 description="Spread of the head across its ray, metres (plus per metre of range)")
    head_ray_sd_per_m: float = Field(0.02, ge=0, title="Head ray sd per metre",
                                     description="Added spread across the ray per metre from the camera")
    spawn_margin_m: float = Field(1.0, ge=0, title="Spawn margin",
                                  description="New shoppers appear within this distance of an entry gate")
    gate_origin_s: float = Field(1.0, ge=0, title="Gate origin window",
                                 description="A shopper first placed away from the gate who is within spawn_margin_m "
                                             "of it this soon after appearing came in through it (a head first "
                                             "seen at the edge of a view can be placed a metre or more off)")
    exit_margin_m: float = Field(1.0, ge=0, title="Exit margin",
                                 description="A shopper lost within this distance of an exit has left")
    max_speed_mps: float = Field(2.5, gt=0, title="Maximum speed", description="Clamp on the filtered velocity")
    history_s: float = Field(40.0, gt=0, title="History", description="Seconds of positions and wrists kept")
    merge_m: float = Field(0.4, gt=0, title="Duplicate distance",
                           description="A shopper who appeared away from the gate and stays this close to an "
                                       "older one ...")
    merge_after_s: float = Field(1.0, ge=0, title="Duplicate time",
                                 description="... for this long is folded into it (0: never)")
    colour_sd: tuple[float, float, float] = Field(
        (8.1, 3.3, 4.6), title="Colour spread",
        description="Spread of one shopper's upper-body colour (L*, a*, b*) over cameras and time "
                    "(python -m bench.appearance on rendered sessions)")
    colour_cap: float = Field(9.0, ge=0, title="Colour cost limit",
                              description="Most a colour mismatch adds to a track's cost (squared sd; 0: colour "
                                          "not used); the cap keeps an odd measurement from outweighing position")
    colour_camera_sd: tuple[PositiveFloat, PositiveFloat, PositiveFloat] | None = Field(
        (4.0, 2.0, 2.7), title="Colour spread in one camera",
        description="Spread of one shopper's colour (L*, a*, b*) as one camera sees it: a shopper whose colour "
                    "this camera has seen colour_min_obs times is matched on that colour at this spread (each "
                    "camera's view and exposure shift colours, so its own view is tighter; null: the colour "
                    "over all cameras only)")
    colour_track_frames: int = Field(5, ge=1, title="Track colour frames",
                                     description="A track's colour in matching is the median of its last this "
                                                 "many colours in its camera (1: the frame's own)")
    colour_min_obs: int = Field(5, ge=1, title="Colour observations",
                                description="Colours seen before a shopper's colour counts in matching")
    adopt_colour_d2: float = Field(6.0, ge=0, title="Adoption colour limit",
                                   description="A shopper who appeared away from the gate and is bound to no visit "
                                               "is adopted by the open visit one of whose shoppers had that "
                                               "colour at the gate, within this squared distance in spreads, "
                                               "when no other visit's comes within adopt_margin_d2 of it (0: "
                                               "never adopted)")
    adopt_margin_d2: float = Field(4.0, ge=0, title="Adoption margin",
                                   description="How much farther in colour every other open visit must be")
    adopt_min_obs: int = Field(10, ge=1, title="Adoption observations",
                               description="Colours seen of the unbound shopper before adoption is decided "
                                           "(once)")
    colour_memory: int = Field(300, ge=1, title="Colour memory",
                                description="A shopper's colour is the running mean of about this many recent "
                                            "observations (those within the limit)")


class AssociationConfig(_Cfg):
    window_pad_s: float = Field(0.6, ge=0, title="Window padding",
                                description="Seconds added around a shelf event's window (clock skew, latency)")
    step_before_s: float = Field(1.2, ge=0, title="Reach before the step",
                                 description="With the event's step time (when the goods left or reached the "
                                             "plates): wrists count from this long before it (the hand reaches "
                                             "in and takes hold)")
    step_after_s: float = Field(1.2, ge=0, title="Hold after the step",
                                description="... until this long after it (the hand draws back); the window "
                                            "stays within the event's own, padded")
    step_exclusion_s: float = Field(0.3, ge=0, title="Exclusion around the step",
                                    description="With a step time, the exclusion (both wrists located away) "
                                                "is judged over this long either side of it")
    candidate_radius_m: float = Field(1.8, gt=0, title="Candidate radius",
                                      description="Shoppers farther than this from the lanes are not candidates")
    reach_m: float = Field(1.0, gt=0, title="Reach",
                           description="Horizontal reach of a wrist from the body; a shopper farther than this "
                                       "from the lanes all through an event's window counts as excluded (as "
                                       "with both wrists located away), seen hands or not")
    wrist_sd_m: float = Field(0.10, gt=0, title="Wrist sd", description="Spread of wrist-to-lane distances")
    approach_m: float = Field(0.25, ge=0, title="Approach depth",
                              description="Space in front of (and behind) a lane that counts as the lane for "
                                          "wrists: hands inside the goods are hidden, hands entering are not")
    inside_cap_m: float = Field(0.10, ge=0, title="Depth credit limit",
                                description="A hand deeper inside the lane than this earns no more credit")
    inside_scale_m: float = Field(0.02, gt=0, title="Depth scale",
                                  description="Log-likelihood gained per this many metres of depth into the lane")
    outside_scale_m: float = Field(0.04, gt=0, title="Outside scale",
                                   description="Log-likelihood lost per this many metres the nearest hand stayed "
                                               "outside the lane's approach (gentler than the depth credit: a "
                                               "picking hand is often hidden, and a bystander's hand located a "
                                               "little off the lane says little about who reached in; much "
                                               "gentler lets the exclusion outweigh the detector's misplaced "
                                               "wrists of the true picker)")
    outside_cap_m: float = Field(0.3, gt=0, title="Outside limit",
                                 description="Wrist distances beyond this all mean 'no hand seen at the lane'")
    exclusion_weight: float = Field(12.0, ge=0, title="Exclusion weight",
                                    description="Log-likelihood lost over an event during which both of a "
                                                "shopper's wrists were located away from the lanes")
    exclusion_far_m: float = Field(0.45, gt=0, title="Exclusion distance",
                                   description="Both wrists located farther than this from the lanes count as "
                                               "'away' for the exclusion")
    rest_height_m: float = Field(1.1, ge=0, title="Resting hand height",
                                 description="Hands hanging by the hip are at most this high (with the "
                                             "keypoints' spread): for lanes whose bottom is at or below it, a "
                                             "bystander's resting hand can lie in a lane's approach -- a hand "
                                             "at 0.94 m lies 0.16 m from a lane starting at 1.07 m")
    exclusion_rest_far_m: float = Field(0.2, gt=0, title="Exclusion distance at hip height",
                                        description="With a step time, for lanes down to rest_height_m: both "
                                                    "wrists located farther than this from the lanes "
                                                    "themselves (not their approach) around the step count as "
                                                    "'away' -- the picker's hand was in the lane then, and a "
                                                    "hand resting in front of it was not")
    persist_instants: int = Field(1, ge=1, title="Persistence",
                                  description="The wrist distance is the k-th smallest over the window's instants")
    persist_mean: bool = Field(True, title="Persistence by the mean",
                               description="The wrist distance is the mean of the k smallest instead of the k-th")
    sibling_persist_instants: int = Field(2, ge=1, title="Persistence beside a sibling",
                                          description="k for an event with siblings (another product's lanes "
                                                      "changed at once: two neighbours' hands at two lanes side "
                                                      "by side), where one instant of one hand triangulated "
                                                      "across the lane border must not decide")
    body_free_m: float = Field(0.1, ge=0, title="Body free distance",
                               description="Body-to-lane distance at the step that costs nothing (where no hand "
                                           "is seen at the lane, who stood nearer is what is left to go by)")
    body_sd_m: float = Field(0.15, gt=0, title="Body sd", description="Spread beyond body_free_m")
    dip_weight: float = Field(6.0, ge=0, title="Head-dip credit",
                              description="Log-score added to a candidate whose head was lower at the step "
                                          "than it stands (bending to a low shelf; fusion.association."
                                          "head_dip), in full from a dip of dip_full_m, in proportion below "
                                          "it; only for lanes reaching below dip_lanes_below_m (0: off)")
    dip_full_m: float = Field(0.25, gt=0, title="Full head dip",
                              description="A head this much lower at the step than standing earns the whole "
                                          "head-dip credit")
    dip_lanes_below_m: float = Field(0.8, ge=0, title="Head dip: lanes below",
                                     description="The head-dip credit counts only for lanes whose bottom is "
                                                 "lower than this (a picker bends to low shelves, not to high "
                                                 "ones)")
    body_at_step_s: float = Field(0.5, ge=0, le=3.0, title="Body at the step",
                                  description="Judge the body's distance within this of the weight's step (of "
                                              "the event's middle, for a gateway that sends no step time): a "
                                              "shopper walking past the lane a second before was not at it "
                                              "(0: over the whole evidence window; at most 3 s)")
    no_wrist_distance_m: float = Field(0.45, gt=0, title="Unseen wrist distance",
                                       description="Distance assumed for a shopper whose wrists were never seen")
    min_margin: float = Field(0.4, ge=0, le=1, title="Minimum margin",
                              description="A line whose winner leads the runner-up by less is uncertain (on "
                                          "truth perception, 44 sessions: 4 of 9 lines below 0.4 went to the "
                                          "wrong shopper, none of 18 between 0.4 and 0.8)")
    max_wrist_distance_m: float = Field(0.3, gt=0, title="Maximum wrist distance",
                                        description="If the best wrist is farther from the lane, uncertain")
    at_lane_m: float = Field(0.5, ge=0, title="At the lane",
                             description="A winner standing this close to the lanes needs no wrist seen there "
                                         "(a hand in a low shelf is hidden from the ceiling)")
    min_candidate_p: float = Field(0.8, ge=0, le=1, title="Minimum product probability",
                                   description="A product identification below this is uncertain")
    put_back_min_mass: float = Field(0.3, ge=0, le=1, title="Put-back cart belief",
                                     description="A put-back's product is judged among what the cart holds "
                                                 "when those candidates carry at least this much of the shelf's "
                                                 "probability; else the shelf's own probability stands")
    put_back_item_sd_g: float = Field(1.0, ge=0, title="Item weighing spread",
                                      description="The shelf's error (g) per weighing when the candidates of a "
                                                  "put-back, or of a pick from a lane holding misplaced goods, are "
                                                  "reweighed by what those very items weighed before (the cart's "
                                                  "picks, the misplaced goods' put-back; 0: not reweighed; "
                                                  "fusion.carts.item_weight_factors)")
    put_back_item_odd: float = Field(0.05, ge=0, le=1, title="Odd item weighings",
                                     description="The share of weighings taken as odd (anywhere within ten "
                                                 "spreads) in that reweighing: one far from everything rules "
                                                 "no product out")
    put_back_weight_sd_g: float = Field(1.5, gt=0, title="Put-back weighing spread",
                                        description="The shelf's weighing error (g) when a put-back the shelf read "
                                                    "as a product the cart does not hold is matched against the "
                                                    "cart's items by weight ...")
    put_back_weight_max_z: float = Field(4.0, ge=0, title="Put-back weight match",
                                         description="... within this many spreads (0: never; two holdings "
                                                     "within it: no match) ...")
    put_back_weight_sure_z: float = Field(4.0, ge=0, title="Put-back weight match, sure",
                                          description="... and a match farther than this is uncertain (at "
                                                      "put_back_weight_max_z, the default: a match is sure when "
                                                      "it is the cart's only holding that close; on the 66 "
                                                      "truth seeds, matches 2.1 and 3.8 spreads off were right)")
    misplaced_memory_s: float = Field(3600.0, ge=0, title="Misplaced goods memory",
                                      description="How long fusion remembers goods a shopper put back on another "
                                                  "product's lane (resolved from their cart): a later pick of "
                                                  "their weight from that lane, which the shelf read as misplaced "
                                                  "goods or was unsure of, is those goods (0: off)")
    sibling_same_shopper: float = Field(0.3, gt=0, le=1, title="One shopper, two lanes at once",
                                        description="How likely one shopper did two events of one shelf change "
                                                    "(two products' lanes at once) against two shoppers doing "
                                                    "one each (1: no preference)")
    busy_window_s: float = Field(1.5, ge=0, title="Busy window",
                                 description="An event too close to call (margin below min_margin) is weighed "
                                             "against the confident events of other shelf changes whose weight "
                                             "stepped this close to its own (0: never); a pick takes about "
                                             "this long from reach to withdrawal")
    busy_same_shopper: float = Field(0.3, gt=0, le=1, title="One shopper, two shelves at once",
                                     description="How likely a shopper busy with another event at the same moment "
                                                 "did this one too, against someone else doing it (1: no "
                                                 "preference; on the 66 truth seeds: a candidate had a confident "
                                                 "event of another change within 1.5 s in 13.5 % of events it "
                                                 "did not do and 1.1 % of those it did)")
    busy_wait_s: float = Field(3.0, ge=0, title="Busy wait",
                               description="How long after its step such an event waits for the others to be "
                                           "decided (an event ends 0.5 s after its step at the median, 1.1 s at "
                                           "the 90th percentile)")
    delay_s: float = Field(0.3, ge=0, title="Association delay",
                           description="Event-time wait after a shelf event's end before associating it")


class CheckoutConfig(_Cfg):
    settle_delay_s: float = Field(0.4, ge=0, title="Settle delay",
                                  description="Event-time wait after the last exit before settling")
    hold_amount: int = Field(5000, ge=0, title="Entry hold", description="Minor units held at entry")
    stale_device_s: float = Field(3.0, gt=0, title="Stale device",
                                  description="A camera silent this long counts as offline")
    forget_after_s: float = Field(300.0, ge=60, title="Forget after",
                                  description="Seconds of event time after a visit's exit (or a shopper's) "
                                              "when fusion drops it from memory: its receipt is in the "
                                              "database, and memory and snapshots stay flat")
    shelf_wait_max_s: float = Field(60.0, ge=0, title="Shelf watermark wait",
                                    description="A visit due to settle waits for every online shelf gateway "
                                                "whose low watermark has not passed its exit (its link may be "
                                                "stalled with the visit's last events in its outbox), at most "
                                                "this many seconds of event time; then it is settled and held "
                                                "for review")
    shelf_near_margin_s: float = Field(1.0, ge=0, title="Shelf wait margin",
                                       description="... and for a gateway's per-shelf watermarks, only up to "
                                                   "this long after the visit's shoppers were last near the shelf "
                                                   "(an event of theirs there started while they were near)")
    party_gone_s: float = Field(10.0, ge=0, title="Lost behind a party",
                                description="A party member lost in the store this long, once every other member of "
                                            "the party has left, left with them unseen (the visit settles, held for "
                                            "review, instead of waiting floor.vanish_after_s); 0: off")


class FusionConfig(_Cfg):
    lateness_s: float = Field(0.3, ge=0, title="Watermark lateness",
                              description="Messages are processed in time order once the clock is this far past")
    instant_s: float = Field(0.01, ge=0, le=0.03, title="Instant",
                             description="Frames of different cameras captured less than this apart are one "
                                         "instant: folded in together at the earliest one's time, in camera "
                                         "order, so edge clocks that agree to a few milliseconds (wire.clock) "
                                         "give the same result whichever frame's stamp is a little earlier")
    camera_stall_s: float = Field(6.0, gt=0, title="Camera stall",
                                  description="Fusion processes event time only as far as the slowest camera "
                                              "that is less than this many seconds behind the newest one (and "
                                              "not offline): cameras that reconnect one by one after a broker "
                                              "restart are waited for, a dead one holds nothing back for long")
    floor: FloorConfig = Field(default_factory=FloorConfig)
    association: AssociationConfig = Field(default_factory=AssociationConfig)
    checkout: CheckoutConfig = Field(default_factory=CheckoutConfig)
